"""recsvc: recommendation and personalization service (serving, export, bandit, experiments)."""

__version__ = "0.1.0"
