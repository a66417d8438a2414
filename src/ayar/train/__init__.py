"""ayar.train."""
