"""Artwork policies by name. ``default`` needs no state: first variant, propensity 1.

``auto`` (what ``recsvc serve`` uses unless told otherwise) is :data:`AUTO_POLICY` when the
bundle has artwork and ``default`` when it has none: the strongest policy measured on the
simulated storefronts (docs/benchmarks/bandit.md), on by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from feature_store.base import CounterDelta, StoredEvent
from recsvc.bandit.base import ArtworkContext, ArtworkDecision, ArtworkPolicy
from recsvc.bundle import ArtworkCatalog, Bundle
from recsvc.errors import UsageError


class DefaultVariantPolicy(ArtworkPolicy):
    """Deterministic: always each item's first (default) variant, propensity 1."""

    name = "default"

    def __init__(self, catalog: ArtworkCatalog | None, item_index: Mapping[str, int]) -> None:
        self._catalog = catalog
        self._item_index = item_index

    def counter_keys(self, ctx: ArtworkContext, item_ids: Sequence[str]) -> list[str]:
        return []

    def choose(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        *,
        explore: bool = True,
        rng: np.random.Generator | None = None,
    ) -> list[ArtworkDecision]:
        out = []
        cat = self._catalog
        for item_id in item_ids:
            variant = ""
            idx = self._item_index.get(item_id)
            if cat is not None and idx is not None and cat.indptr[idx] < cat.indptr[idx + 1]:
                variant = str(cat.variant_ids[cat.indptr[idx]])
            out.append(ArtworkDecision(item_id, variant, 1.0))
        return out

    def updates_for(self, ctx: ArtworkContext, event: StoredEvent) -> list[CounterDelta]:
        return []


PolicyFactory = Callable[..., ArtworkPolicy]

AUTO = "auto"
AUTO_POLICY = "lints"


def resolve_policy_name(name: str, bundle: Bundle) -> str:
    """``name``, or for ``auto`` the policy it stands for with this bundle."""
    if name != AUTO:
        return name
    art = bundle.artwork
    return AUTO_POLICY if art is not None and len(art.variant_ids) else "default"


_FACTORIES: dict[str, PolicyFactory] = {
    "default": lambda bundle, **_: DefaultVariantPolicy(bundle.artwork, bundle.item_index),
    "ts": lambda bundle, **params: _thompson().make_thompson(bundle, **params),
    "ts-item": lambda bundle, **params: _thompson().make_thompson(
        bundle, **{"bucket_features": (), **params}
    ),
    "lints": lambda bundle, **params: _linear().make_linear(bundle, **params),
}


def _thompson() -> Any:
    import recsvc.bandit.thompson as module

    return module


def _linear() -> Any:
    import recsvc.bandit.linear as module

    return module


def register_policy(name: str, factory: PolicyFactory) -> None:
    _FACTORIES[name] = factory


def policy_names() -> list[str]:
    return sorted([*_FACTORIES, AUTO])


def make_policy(name: str, bundle: Bundle, **params: Any) -> ArtworkPolicy:
    """Build the named policy for a bundle's artwork catalog; unknown name -> UsageError."""
    name = resolve_policy_name(name, bundle)
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UsageError(
            f"unknown bandit policy '{name}'; known: {', '.join(policy_names())}"
        ) from None
    policy = factory(bundle, **params)
    # The registry name (``ts-item`` is a ThompsonPolicy too): exposures record it, and
    # RecordEvents rebuilds the crediting policy by it.
    policy.name = name
    return policy
