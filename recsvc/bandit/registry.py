"""Artwork policies by name. ``default`` needs no state: each item's default variant."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from feature_store.base import CounterDelta, StoredEvent
from recsvc.bandit.base import ArtworkContext, ArtworkDecision, ArtworkPolicy
from recsvc.bundle import ArtworkCatalog, Bundle
from recsvc.bundle.scoring import default_variant
from recsvc.errors import UsageError


class DefaultVariantPolicy(ArtworkPolicy):
    """Deterministic: each item's default variant
    (:func:`recsvc.bundle.scoring.default_variant`), propensity 1. Stateless, so every
    decision is looked up in a table built once per bundle."""

    name = "default"

    def __init__(self, catalog: ArtworkCatalog | None, item_index: Mapping[str, int]) -> None:
        # [I] the default variant of each item row, "" for an item without artwork.
        self.variants = np.full(len(item_index), "", dtype=object)
        self._decisions: dict[str, ArtworkDecision] = {}
        if catalog is not None:
            for item_id, row in item_index.items():
                variant = default_variant(catalog, row)
                if variant is not None:
                    self.variants[row] = variant
                    self._decisions[item_id] = ArtworkDecision(item_id, variant, 1.0)

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
        found = list(map(self._decisions.get, item_ids))  # one dict lookup per item
        if None in found:  # unknown items and items without artwork
            return [d or ArtworkDecision(i, "", 1.0) for d, i in zip(found, item_ids, strict=True)]
        return found  # type: ignore[return-value]

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
