"""Online pipeline as batch-capable operators (Merlin-style stages).

``prepare_users`` -> ``retrieve`` -> ``allowed_mask`` (filters) -> ``top_k`` ->
``fill_short`` (fallbacks) -> ``reasons_for`` -> ``choose_artwork``. Serving runs them for
one user per call, export for chunks of users: every business rule lives here once.
"""

from recsvc.pipeline.artwork import artwork_context, choose_artwork
from recsvc.pipeline.model import ServingModel, build_model
from recsvc.pipeline.recommend import (
    Recommendation,
    rank_users,
    recommend,
    score_items,
    to_recommendations,
)
from recsvc.pipeline.users import UserBatch, UserInput, prepare_users

__all__ = [
    "Recommendation",
    "ServingModel",
    "UserBatch",
    "UserInput",
    "artwork_context",
    "build_model",
    "choose_artwork",
    "prepare_users",
    "rank_users",
    "recommend",
    "score_items",
    "to_recommendations",
]
