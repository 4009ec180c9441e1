"""Items like an item: the nearest item vectors by inner product (the FAISS item index)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def similar_items(
    index: Any, item_factors: np.ndarray, item_row: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items whose vectors score highest against item ``item_row``'s in
    ``index`` (the bundle's FAISS index over ``item_factors``), the item itself left out:
    (item rows int64, scores float32), best first. IndexError for a row outside the
    catalog."""
    n = len(item_factors)
    if not 0 <= item_row < n:
        raise IndexError(f"item row {item_row} out of range 0..{n - 1}")
    if k <= 0 or n <= 1:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    query = np.ascontiguousarray(item_factors[item_row : item_row + 1], dtype=np.float32)
    scores, items = index.search(query, min(k + 1, n))
    keep = (items[0] >= 0) & (items[0] != item_row)
    return items[0][keep][:k].astype(np.int64), scores[0][keep][:k].astype(np.float32)


def interaction_counts(user_items: Any, n_items: int) -> np.ndarray:
    """[I] int64: how many users interacted with each item in the training history (the
    bundle's user x item matrix); 0 = the item's vector learned nothing from behaviour."""
    return np.bincount(np.asarray(user_items.indices), minlength=n_items).astype(np.int64)


def similar_by_features(
    item_features: Mapping[str, np.ndarray], popularity: np.ndarray, item_row: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Items like an item nobody interacted with (its vector says nothing): those sharing
    the most of its non-empty feature values (e.g. category), more popular first; score =
    the share of its features matched. Empty when it has no feature value to compare."""
    n = len(popularity)
    shared = np.zeros(n, dtype=np.int64)
    compared = 0
    for values in item_features.values():
        value = values[item_row]
        if value != "":
            shared += values == value
            compared += 1
    shared[item_row] = 0
    candidates = np.flatnonzero(shared > 0)
    if not compared or not len(candidates) or k <= 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    order = np.lexsort((candidates, -popularity[candidates], -shared[candidates]))[:k]
    rows = candidates[order].astype(np.int64)
    return rows, (shared[rows] / compared).astype(np.float32)
