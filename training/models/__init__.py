"""Recommendation models behind one interface (``RecommenderBase``) and a small factory."""

from __future__ import annotations

from typing import Any

from training.errors import TrainingError
from training.models.base import RecommenderBase


def _registry() -> dict[str, type[RecommenderBase]]:
    # Imported lazily: lightfm is only loaded when the hybrid model is used.
    from training.models.als import ALSModel, BPRModel
    from training.models.blend import EASEALSBlendModel
    from training.models.ease import EASELowRankModel, EASEModel
    from training.models.popularity import PopularityModel, RegionalPopularityModel

    models: dict[str, type[RecommenderBase]] = {
        cls.name: cls
        for cls in (
            ALSModel,
            BPRModel,
            EASEALSBlendModel,
            EASEModel,
            EASELowRankModel,
            PopularityModel,
            RegionalPopularityModel,
        )
    }
    from training.models.hybrid import LightFMHybrid

    models[LightFMHybrid.name] = LightFMHybrid
    return models


MODEL_NAMES = (
    "als",
    "bpr",
    "lightfm",
    "popularity",
    "region_popularity",
    "ease",
    "ease-lowrank",
    "ease-als",
)


def model_class(name: str) -> type[RecommenderBase]:
    """The class registered under ``name`` (one of ``MODEL_NAMES``)."""
    registry = _registry()
    if name not in registry:
        raise TrainingError(f"unknown model '{name}'; choose from {', '.join(MODEL_NAMES)}")
    return registry[name]


def make_model(name: str, **params: Any) -> RecommenderBase:
    """A new, unfitted model: ``make_model("als", factors=128)``."""
    return model_class(name)(**params)


__all__ = ["MODEL_NAMES", "RecommenderBase", "make_model", "model_class"]
