"""Small catalogs and bundles for the bandit tests (real dataclasses, tiny sizes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recsvc.bundle import ArtworkCatalog, Bundle


def catalog(variants: Mapping[str, list[tuple[str, str]]]) -> tuple[ArtworkCatalog, dict[str, int]]:
    """{item: [(variant, theme), ...]} -> (catalog, item_index)."""
    items = list(variants)
    counts = [len(variants[i]) for i in items]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ids = np.array([v for i in items for v, _ in variants[i]])
    themes = np.array([t for i in items for _, t in variants[i]])
    return ArtworkCatalog(indptr, ids, {"theme": themes}), {i: k for k, i in enumerate(items)}


def bundle(
    art: ArtworkCatalog,
    item_index: dict[str, int],
    user_factors: np.ndarray,
    user_features: dict[str, np.ndarray] | None = None,
    version: str = "test-v1",
    item_factors: np.ndarray | None = None,
    item_features: dict[str, np.ndarray] | None = None,
) -> Bundle:
    """A Bundle with only what artwork policies read; the other fields are empty."""
    n_users = len(user_factors)
    user_ids = np.array([f"u{k}" for k in range(n_users)])
    item_ids = np.array(sorted(item_index, key=item_index.__getitem__))
    empty = np.zeros(0)
    return Bundle(
        path=Path("/nonexistent"),
        version=version,
        manifest={},
        user_ids=user_ids,
        item_ids=item_ids,
        user_index={u: k for k, u in enumerate(user_ids)},
        item_index=dict(item_index),
        user_factors=np.asarray(user_factors, np.float32),
        item_factors=np.zeros((len(item_ids), user_factors.shape[1]), np.float32)
        if item_factors is None
        else np.asarray(item_factors, np.float32),
        index=None,
        user_items=None,  # type: ignore[arg-type]
        popularity=empty,
        region_names=empty,
        region_popularity=empty,
        item_availability=None,  # type: ignore[arg-type]
        available_everywhere=empty,
        item_features=item_features or {},
        user_features=user_features or {},
        candidates=None,  # type: ignore[arg-type]
        region_candidates=None,  # type: ignore[arg-type]
        hybrid=None,
        artwork=art,
    )
