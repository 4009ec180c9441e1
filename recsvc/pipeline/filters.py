"""Stage 2, filter: the business rules, in one place for serving and export.

An item may be recommended to a user only if it exists, the user has not interacted with
it (training history or recent non-impression events; ``include_seen`` turns that off),
it is not excluded by the request, it is available in the user's region (an item with no
``regions`` restriction is available everywhere; a region the bundle does not know gets
only those; no region at all means no regional rule), and, when the request names
categories, its category is one of them.
"""

from __future__ import annotations

import numpy as np

from recsvc.pipeline.model import ServingModel
from recsvc.pipeline.users import UserBatch


def _region_mask(model: ServingModel, region: int) -> np.ndarray:
    if model.allowed is not None:
        return model.allowed[region]
    bundle = model.bundle
    mask = np.asarray(bundle.available_everywhere, dtype=bool).copy()
    if region < model.n_regions:
        column = bundle.item_availability[:, region].toarray().ravel().astype(bool)
        mask |= column
    return mask


def _blocked(batch: UserBatch, users: np.ndarray, safe: np.ndarray, n_items: int) -> np.ndarray:
    """True where the item is blocked for that row's user (one searchsorted per batch)."""
    if len(users) == 1:
        keys, probe = batch.blocked[int(users[0])], safe
    else:
        # Keys user*I + item are sorted when each user's list is: one search for all rows.
        parts = [batch.blocked[u] + i * n_items for i, u in enumerate(users.tolist())]
        keys = np.concatenate(parts) if parts else np.empty(0, np.int64)
        probe = safe + (np.arange(len(users)) * n_items)[:, None]
    if not len(keys):
        return np.zeros(safe.shape, dtype=bool)
    pos = np.searchsorted(keys, probe)
    return keys[np.minimum(pos, len(keys) - 1)] == probe


def allowed_row(model: ServingModel, batch: UserBatch, u: int, items: np.ndarray) -> np.ndarray:
    """``allowed_mask`` for one user and a 1-D row of real item rows (no -1 padding): the
    serving case, in a third of the numpy calls."""
    region = int(batch.regions[u])
    ok = _region_mask(model, region).take(items) if region >= 0 else np.ones(len(items), bool)
    keys = batch.blocked[u]
    if len(keys):
        pos = keys.searchsorted(items)
        np.minimum(pos, len(keys) - 1, out=pos)
        ok &= keys.take(pos) != items
    cats = batch.categories[u]
    if cats is not None:
        codes = model.category_codes
        ok &= np.isin(codes[items], cats) if codes is not None else False
    return ok


def allowed_mask(
    model: ServingModel, batch: UserBatch, users: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """``[len(users), C]`` bool: may ``items[i, c]`` be shown to user ``users[i]``."""
    ok = items >= 0
    safe = np.maximum(items, 0)
    ok &= ~_blocked(batch, users, safe, model.n_items)

    regions = batch.regions[users]
    if len(users) == 1:  # the serving case: no per-row bookkeeping
        region = int(regions[0])
        if region >= 0:
            ok[0] &= _region_mask(model, region)[safe[0]]
        cats = batch.categories[int(users[0])]
        if cats is not None:
            codes = model.category_codes
            ok[0] &= np.isin(codes[safe[0]], cats) if codes is not None else False
        return ok
    with_region = np.flatnonzero(regions >= 0)
    if len(with_region) == len(users) and model.allowed is not None:
        ok &= model.allowed[regions[:, None], safe]
    elif len(with_region):
        for i in with_region.tolist():
            ok[i] &= _region_mask(model, int(regions[i]))[safe[i]]

    for i, u in enumerate(users.tolist()):
        cats = batch.categories[u]
        if cats is not None:
            codes = model.category_codes
            ok[i] &= np.isin(codes[safe[i]], cats) if codes is not None else False
    return ok
