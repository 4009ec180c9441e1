"""The artwork policy hook shared by serving, export and the bandit.

A policy reads its state as counter hashes from the feature store (shared by every replica),
chooses one variant per item with the probability of that choice (propensity), and turns
events into counter deltas. THIS INTERFACE IS SHARED: extend, do not rename.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_store.base import CounterDelta, StoredEvent


@dataclass(frozen=True, slots=True)
class ArtworkContext:
    """Who is looking: features for context buckets and the user's CF embedding (taste)."""

    user_id: str
    region: str = ""
    features: Mapping[str, str] = field(default_factory=dict)
    user_vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ArtworkDecision:
    item_id: str
    variant_id: str
    propensity: float


class ArtworkPolicy(ABC):
    """Choose a variant per item. ``explore=False`` gives the best posterior mean (export)."""

    name: str

    @abstractmethod
    def counter_keys(self, ctx: ArtworkContext, item_ids: Sequence[str]) -> list[str]:
        """Store counter hashes this policy needs to decide for these items."""

    @abstractmethod
    def choose(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        *,
        explore: bool = True,
        rng: np.random.Generator | None = None,
    ) -> list[ArtworkDecision]:
        """One decision per item, in order. Items without artwork get variant ""."""

    @abstractmethod
    def updates_for(self, ctx: ArtworkContext, event: StoredEvent) -> list[CounterDelta]:
        """Counter deltas for an impression/click on the variant actually shown."""
