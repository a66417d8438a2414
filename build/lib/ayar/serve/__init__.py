"""ayar.serve."""
