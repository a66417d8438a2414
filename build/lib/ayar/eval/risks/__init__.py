"""The risk report: bias, hallucination, security and privacy probes (carbon lives in ayar.eval.carbon)."""
