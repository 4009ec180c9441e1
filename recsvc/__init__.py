"""recsvc: recommendation and personalization microservice (serving, export, bandit, experiments)."""

__version__ = "0.1.0"
