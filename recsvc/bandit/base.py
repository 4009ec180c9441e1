"""The artwork policy hook shared by serving, export and the bandit.

A policy reads its state as counter hashes from the feature store (shared by every replica),
chooses one variant per item with the probability of that choice (propensity), and turns
events into counter deltas. THIS INTERFACE IS SHARED: extend, do not rename.

Credit: what a policy used to choose is recorded with the exposure
(:meth:`ArtworkPolicy.exposure_context`, with the policy's :attr:`ArtworkPolicy.state_key`),
and an impression or click of that request moves the statistics of exactly that context
(:meth:`ArtworkPolicy.context_from_exposure`): nothing is recomputed when the event arrives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_store.base import CounterDelta, StoredEvent


@dataclass(frozen=True, slots=True)
class ArtworkContext:
    """Who is looking: features for context buckets and the user's CF embedding (taste).

    ``features`` are the user's merged features (profile < request attributes < request
    region, :func:`recsvc.pipeline.features.merge_user_features`); ``taste`` is a taste
    vector recorded with an exposure, which wins over ``user_vector`` (policies that use one).
    """

    user_id: str
    region: str = ""
    features: Mapping[str, str] = field(default_factory=dict)
    user_vector: np.ndarray | None = None
    taste: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class ArtworkDecision:
    item_id: str
    variant_id: str
    propensity: float


# Exposure-context key holding a recorded taste vector (comma-separated floats).
TASTE_KEY = "~taste"


class ArtworkPolicy(ABC):
    """Choose a variant per item. ``explore=False`` gives the best posterior mean (export)."""

    name: str

    @property
    def state_key(self) -> str:
        """What the policy's statistics are keyed by (its name and the parameters that
        change what the counters mean). Recorded with each exposure: an event is credited
        only to a policy with the same state key."""
        return self.name

    def exposure_context(self, ctx: ArtworkContext) -> dict[str, str]:
        """The context values this policy used for ``ctx``, recorded with the exposure
        (and ``region`` when there is one, for the logs)."""
        return {"region": ctx.region} if ctx.region else {}

    def context_from_exposure(self, user_id: str, recorded: Mapping[str, str]) -> ArtworkContext:
        """The context an exposure recorded (:meth:`exposure_context`), for crediting its
        impressions and clicks."""
        features = {k: v for k, v in recorded.items() if k != TASTE_KEY}
        return ArtworkContext(user_id, region=features.get("region", ""), features=features)

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
