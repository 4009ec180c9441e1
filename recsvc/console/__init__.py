"""The operator console: ``recsvc console`` (experiments, models, artwork, live, insights)."""
