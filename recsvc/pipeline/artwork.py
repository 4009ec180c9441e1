"""Stage 5, artwork: one variant per recommended item through the policy hook.

The policy names the counter hashes it needs (``counter_keys``), the caller reads them
(from the feature store: a second round trip only when the policy has state), and the
policy chooses with a propensity. When the counters cannot be read the default variant
is served, propensity 1, and the caller is told so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from feature_store.errors import FeatureStoreUnavailable
from recsvc.bandit.base import ArtworkContext, ArtworkDecision, ArtworkPolicy
from recsvc.pipeline.users import UserBatch

CounterReader = Callable[[Sequence[str]], Mapping[str, Mapping[str, float]]]


def artwork_context(batch: UserBatch, u: int) -> ArtworkContext:
    """The context the policy sees for user ``u`` of ``batch``."""
    features = batch.features[u]
    vector = batch.vectors[u] if batch.personal[u] else None
    return ArtworkContext(
        user_id=batch.inputs[u].user_id,
        region=features.get("region", ""),
        features=features,
        user_vector=vector,
    )


def choose_artwork(
    policy: ArtworkPolicy,
    fallback: ArtworkPolicy,
    ctx: ArtworkContext,
    item_ids: Sequence[str],
    read_counters: CounterReader | None,
    *,
    explore: bool = True,
    rng: np.random.Generator | None = None,
) -> tuple[list[ArtworkDecision], ArtworkPolicy, bool]:
    """Decisions, the policy that made them, and whether we fell back (store down)."""
    keys = policy.counter_keys(ctx, item_ids)
    counters: Mapping[str, Mapping[str, float]] = {}
    if keys:
        if read_counters is None:
            return fallback.choose(ctx, item_ids, {}), fallback, True
        try:
            counters = read_counters(keys)
        except FeatureStoreUnavailable:
            return fallback.choose(ctx, item_ids, {}), fallback, True
    return policy.choose(ctx, item_ids, counters, explore=explore, rng=rng), policy, False
