"""Items like an item: the nearest item vectors by inner product (the FAISS item index)."""

from __future__ import annotations

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
