"""`ayar ui`: a local web app over the run folders (runs, run pages, compare, playground, new run)."""
