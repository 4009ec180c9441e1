"""Numpy scoring over bundle arrays that online code needs without the training stack.

Cold-start scoring of a user known only by features, from the LightFM hybrid's plain arrays
(:class:`~recsvc.bundle.format.HybridArrays`), and each item's default artwork variant. The
offline job uses the same functions, so the model it evaluates is the model that serves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from recsvc.bundle.format import ArtworkCatalog, Bundle, ColdStartArrays, HybridArrays

_NAME_INDEX: dict[int, tuple[np.ndarray, dict[str, int]]] = {}


def _name_index(h: HybridArrays) -> dict[str, int]:
    return _names_index(h.user_feature_names)


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


def segment_scores(
    cold: ColdStartArrays, popularity: np.ndarray, features: Mapping[str, str]
) -> np.ndarray:
    """[I] float64 log-scores of the ``segments`` source (``ColdStartArrays``).

    Each group's item shares are shrunk toward its parent, ``p_g = (n_g + m p_parent) /
    (N_g + m)`` (``m`` = ``prior_strength``; a single column's parent is global popularity,
    a pair's the mean of its two single-column shares), and the chosen groupings add their
    log-ratios to global: ``log p + sum_g (log p_g - log p)``. Unknown values fall back to
    the parent, so a user with no known feature gets global popularity.
    """
    base = np.asarray(popularity, dtype=np.float64)
    total = base.sum()
    glob = base / total if total > 0 else np.full(base.size, 1.0 / max(base.size, 1))
    glob = np.maximum(glob, 1e-12)
    index = _group_index(cold)
    counts = sp.csr_matrix(cold.group_counts)
    m = float(cold.prior_strength)

    def shrunk(key: str, parent: np.ndarray) -> np.ndarray:
        g = index.get(key)
        if g is None:
            return parent
        row = np.zeros(base.size, dtype=np.float64)
        lo, hi = counts.indptr[g], counts.indptr[g + 1]
        row[counts.indices[lo:hi]] = counts.data[lo:hi]
        return (row + m * parent) / (row.sum() + m) if row.sum() + m > 0 else parent

    scores = np.log(glob)
    for grouping in cold.groupings:
        values = [features.get(c, "") for c in grouping]
        if not all(values):
            continue
        singles = [shrunk(f"{c}={v}", glob) for c, v in zip(grouping, values, strict=True)]
        if len(grouping) == 1:
            share = singles[0]
        else:
            key = "|".join(f"{c}={v}" for c, v in zip(grouping, values, strict=True))
            share = shrunk(key, np.mean(singles, axis=0))
        scores += np.log(np.maximum(share, 1e-12)) - np.log(glob)
    return scores


def _group_index(cold: ColdStartArrays) -> dict[str, int]:
    return _names_index(cold.group_keys)


def _names_index(names: np.ndarray) -> dict[str, int]:
    """``{name: row}`` of a bundle's name array, cached per array (bundles are immutable)."""
    cached = _NAME_INDEX.get(id(names))
    if cached is not None and cached[0] is names:
        return cached[1]
    if len(_NAME_INDEX) > 16:  # bundles are hot-swapped; old entries must not pile up
        _NAME_INDEX.clear()
    index = {str(n): i for i, n in enumerate(names)}
    _NAME_INDEX[id(names)] = (names, index)
    return index


def profile_key(bundle: Bundle, features: Mapping[str, str]) -> tuple[str, ...]:
    """The ``"column=value"`` features the cold-start source ``train`` chose reads, sorted:
    :func:`cold_start_scores` depends on these alone (so they key a cache of its answers).
    Empty for the ``popularity`` source and for bundles without a choice."""
    cold = bundle.cold_start
    if cold is None or cold.source == "popularity":
        return ()
    pairs = sorted(f"{k}={v}" for k, v in features.items() if v)
    if cold.source == "segments":
        used = {c for grouping in cold.groupings for c in grouping}
        return tuple(p for p in pairs if p.split("=", 1)[0] in used)
    if cold.source == "embedding":
        return tuple(p for p in pairs if p in _names_index(cold.feature_names))
    if cold.source == "lightfm" and bundle.hybrid is not None:
        return tuple(p for p in pairs if p in _name_index(bundle.hybrid))
    return ()


def profile_known(bundle: Bundle, features: Mapping[str, str]) -> bool:
    """Whether the cold-start source ``train`` chose knows any of ``features`` (so
    :func:`cold_start_scores` ranks by the profile rather than by global popularity)."""
    read = profile_key(bundle, features)
    cold = bundle.cold_start
    if cold is not None and cold.source == "segments":
        return any(p in _group_index(cold) for p in read)
    return bool(read)


def embedding_vector(cold: ColdStartArrays, features: Mapping[str, str]) -> np.ndarray:
    """[d] float32 vector in the shipped CF space of the ``embedding`` source:
    ``intercept + sum of feature_weights`` over the known ``"column=value"`` features."""
    index = _names_index(cold.feature_names)
    rows = [index[f"{k}={v}"] for k, v in features.items() if f"{k}={v}" in index]
    vector = np.asarray(cold.intercept, dtype=np.float32).copy()
    if rows:
        vector += cold.feature_weights[rows].sum(axis=0, dtype=np.float32)
    return vector


def cold_start_scores(bundle: Bundle, features: Mapping[str, str]) -> np.ndarray:
    """[I] float32 scores of every item for a user with no history but profile
    ``features`` (``{"region": "US-9", "age_bucket": "25-34", ...}``: the stored profile
    merged with request context). Uses the source ``train`` chose on held-out users
    (``bundle.cold_start.source``); bundles without one rank by global popularity. Region
    availability is not applied here (the caller filters)."""
    cold = bundle.cold_start
    source = "popularity" if cold is None else cold.source
    if cold is not None and source == "segments":
        return segment_scores(cold, bundle.popularity, features).astype(np.float32)
    if cold is not None and source == "embedding":
        return bundle.item_factors @ embedding_vector(cold, features)
    if source == "lightfm" and bundle.hybrid is not None:
        return cold_user_scores(bundle.hybrid, features).astype(np.float32)
    return np.asarray(bundle.popularity, dtype=np.float32)


def item_variants(catalog: ArtworkCatalog, item_row: int) -> np.ndarray:
    """The artwork variants of the item at ``item_row``, the default first."""
    return catalog.variant_ids[catalog.indptr[item_row] : catalog.indptr[item_row + 1]]


def default_variant(catalog: ArtworkCatalog, item_row: int) -> str | None:
    """An item's default artwork: its catalog's first variant (None if it has none)."""
    start, stop = int(catalog.indptr[item_row]), int(catalog.indptr[item_row + 1])
    return str(catalog.variant_ids[start]) if stop > start else None
