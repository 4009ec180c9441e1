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
from recsvc.bandit.registry import DefaultVariantPolicy
from recsvc.bundle import ArtworkCatalog
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
    defaults: Mapping[str, ArtworkDecision] | None = None,
) -> tuple[list[ArtworkDecision], ArtworkPolicy, bool]:
    """Decisions, the policy that made them, and whether we fell back (store down).

    ``defaults`` (``ServingModel.default_decisions``) answers for the stateless default
    policy with one dict lookup per item instead of its per-item loop (same decisions).
    """
    keys = policy.counter_keys(ctx, item_ids)
    counters: Mapping[str, Mapping[str, float]] = {}
    if keys:
        if read_counters is None:
            return _default(fallback, ctx, item_ids, defaults), fallback, True
        try:
            counters = read_counters(keys)
        except FeatureStoreUnavailable:
            return _default(fallback, ctx, item_ids, defaults), fallback, True
    if defaults is not None and type(policy) is DefaultVariantPolicy:
        return _default(policy, ctx, item_ids, defaults), policy, False
    return policy.choose(ctx, item_ids, counters, explore=explore, rng=rng), policy, False


def _default(
    policy: ArtworkPolicy,
    ctx: ArtworkContext,
    item_ids: Sequence[str],
    defaults: Mapping[str, ArtworkDecision] | None,
) -> list[ArtworkDecision]:
    if defaults is None or type(policy) is not DefaultVariantPolicy:
        return policy.choose(ctx, item_ids, {})
    found = list(map(defaults.get, item_ids))  # in C: one lookup per item
    if None in found:  # items without artwork
        found = [d or ArtworkDecision(i, "", 1.0) for d, i in zip(found, item_ids, strict=True)]
    return found  # type: ignore[return-value]


def default_decisions(catalog: ArtworkCatalog | None, item_ids: Sequence[str]) -> dict:
    """Each item's default artwork (its catalog's first variant), propensity 1: what
    :class:`DefaultVariantPolicy` chooses, built once per bundle."""
    if catalog is None:
        return {}
    starts, ends = catalog.indptr[:-1], catalog.indptr[1:]
    has = np.flatnonzero(ends > starts)
    variants = catalog.variant_ids[starts[has]].tolist()
    return {
        item_ids[j]: ArtworkDecision(item_ids[j], str(v), 1.0)
        for j, v in zip(has.tolist(), variants, strict=True)
    }
