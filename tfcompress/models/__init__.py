"""Model builders (placeholder until the models module lands)."""
