"""ayar.eval."""
