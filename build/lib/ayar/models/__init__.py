"""ayar.models."""
