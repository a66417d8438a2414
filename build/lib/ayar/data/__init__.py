"""Data preparation: load, clean, dedup, pii, format, split, tokenize."""
