"""Stage 2, filter: the business rules, each written once, for serving, export and audience.

An item may be recommended to a user only if it exists, it is available in the user's
region (:func:`region_allows`, the rule of :mod:`recsvc.pipeline.regions`), it is not
blocked for the user (:func:`not_blocked`: items whose events the seen rule counts, in the
training history or recent events, unless ``include_seen``, and items the request
excludes), and, when the request names categories, its category is one of them
(:func:`category_allows`). :func:`allowed_mask` applies all of them to any batch of users,
one user (serving) included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsvc.pipeline.model import ServingModel
from recsvc.pipeline.regions import available_items
from recsvc.pipeline.users import UserBatch


def region_allows(model: ServingModel, regions: np.ndarray, items: np.ndarray | int) -> np.ndarray:
    """Whether each item may be shown in each region row (the two broadcast together:
    ``[B, 1]`` regions against ``[B, C]`` items, or ``[U]`` users' regions against one
    item); items must be real rows (no -1)."""
    if model.availability is not None:  # the table of every region row, built at load
        return model.availability[regions, items]  # type: ignore[no-any-return]
    regions, items = np.broadcast_arrays(regions, items)
    out = np.empty(regions.shape, dtype=bool)
    for region in np.unique(regions).tolist():
        rows = regions == region
        mask = available_items(model.bundle.available_everywhere, model.sold_in, region)
        out[rows] = mask[items[rows]]
    return out


def not_blocked(keys: Sequence[np.ndarray], items: np.ndarray, n_items: int) -> np.ndarray:
    """``[B, C]`` bool: ``items[b, c]`` is not among the sorted item rows ``keys[b]``.

    Keys ``b * n_items + item`` stay sorted when each row's keys are, so the whole batch
    is one search."""
    if len(keys) == 1:  # one user (serving): no offsets to add
        flat, probe = keys[0], items
    else:
        offsets = np.arange(len(keys), dtype=np.int64) * n_items
        flat = np.concatenate([k + o for k, o in zip(keys, offsets.tolist(), strict=True)])
        probe = items + offsets[:, None]
    if not len(flat):
        return np.ones(items.shape, dtype=bool)
    pos = flat.searchsorted(probe)
    np.minimum(pos, len(flat) - 1, out=pos)
    return flat.take(pos) != probe  # type: ignore[no-any-return]


def category_allows(model: ServingModel, categories: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each item's category is one of the category codes ``categories`` (a
    bundle without categories matches none)."""
    codes = model.category_codes
    if codes is None:
        return np.zeros(items.shape, dtype=bool)
    return np.isin(codes[items], categories)


def allowed_mask(
    model: ServingModel, batch: UserBatch, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """``[len(users), C]`` bool: may ``items[i, c]`` (-1 = no item) be shown to user
    ``users[i]`` of ``batch``."""
    ok = items >= 0
    safe = np.maximum(items, 0)
    ok &= region_allows(model, batch.regions[users][:, None], safe)
    rows = users.tolist()
    ok &= not_blocked([batch.blocked[u] for u in rows], safe, model.n_items)
    for i, u in enumerate(rows):
        categories = batch.categories[u]
        if categories is not None:
            ok[i] &= category_allows(model, categories, safe[i])
    return ok
