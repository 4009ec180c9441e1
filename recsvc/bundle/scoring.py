"""Numpy scoring over bundle arrays that online code needs without the training stack.

Cold-start scoring of a user known only by features, from the LightFM hybrid's plain arrays
(:class:`~recsvc.bundle.format.HybridArrays`), and each item's default artwork variant. The
offline job uses the same functions, so the model it evaluates is the model that serves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recsvc.bundle.format import ArtworkCatalog, HybridArrays

_NAME_INDEX: dict[int, tuple[np.ndarray, dict[str, int]]] = {}


def _name_index(h: HybridArrays) -> dict[str, int]:
    cached = _NAME_INDEX.get(id(h.user_feature_names))
    if cached is not None and cached[0] is h.user_feature_names:
        return cached[1]
    if len(_NAME_INDEX) > 16:  # bundles are hot-swapped; old entries must not pile up
        _NAME_INDEX.clear()
    index = {str(n): i for i, n in enumerate(h.user_feature_names)}
    _NAME_INDEX[id(h.user_feature_names)] = (h.user_feature_names, index)
    return index


def cold_user_vector(h: HybridArrays, features: Mapping[str, str]) -> tuple[np.ndarray, float]:
    """(representation [d] float32, bias) of a user with no history but known features.

    ``features`` maps a user column to its value (``{"region": "US-9", "age": "25-34"}``).
    Feature names unknown to the model are ignored; the known rows are averaged (the
    training rows were L1-normalized). LightFM's score of item i is then
    ``vector @ h.item_representations[i] + bias + h.item_biases[i]``. No known feature:
    a zero vector and bias 0 (the ranking falls back to the item biases).
    """
    index = _name_index(h)
    rows = [index[f"{k}={v}"] for k, v in features.items() if f"{k}={v}" in index]
    d = h.user_feature_embeddings.shape[1]
    if not rows:
        return np.zeros(d, dtype=np.float32), 0.0
    weight = np.float32(1.0 / len(rows))
    vector = h.user_feature_embeddings[rows].sum(axis=0, dtype=np.float32) * weight
    bias = float(h.user_feature_biases[rows].sum(dtype=np.float32) * weight)
    return vector.astype(np.float32, copy=False), bias


def cold_user_scores(h: HybridArrays, features: Mapping[str, str]) -> np.ndarray:
    """[I] LightFM scores of every item for a cold-start user."""
    vector, bias = cold_user_vector(h, features)
    return h.item_representations @ vector + h.item_biases + np.float32(bias)


def item_variants(catalog: ArtworkCatalog, item_row: int) -> np.ndarray:
    """The artwork variants of the item at ``item_row``, the default first."""
    return catalog.variant_ids[catalog.indptr[item_row] : catalog.indptr[item_row + 1]]


def default_variant(catalog: ArtworkCatalog, item_row: int) -> str | None:
    """An item's default artwork: its catalog's first variant (None if it has none)."""
    start, stop = int(catalog.indptr[item_row]), int(catalog.indptr[item_row + 1])
    return str(catalog.variant_ids[start]) if stop > start else None
