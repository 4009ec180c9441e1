"""Why each item is there, in words a storefront can show.

Personal items name the history item they are most similar to (cosine of item factors)
when that similarity is clear; other sources say where the item came from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsvc.pipeline.model import (
    SOURCE_GLOBAL,
    SOURCE_PERSONAL,
    SOURCE_PROFILE,
    SOURCE_REGION,
    ServingModel,
)
from recsvc.pipeline.order import Ranked
from recsvc.pipeline.users import (
    ANCHOR_BOUGHT,
    ANCHOR_LIKED,
    ANCHOR_VIEWED,
    MAX_HISTORY_ANCHORS,
    UserBatch,
)

SIMILARITY_THRESHOLD = 0.5
SOURCE_TEXT = {
    SOURCE_PERSONAL: "recommended for you",
    SOURCE_PROFILE: "recommended for people like you",
    SOURCE_REGION: "popular in your region",
    SOURCE_GLOBAL: "popular right now",
}
SOURCE_NAMES = {
    SOURCE_PERSONAL: "personal",
    SOURCE_PROFILE: "profile",
    SOURCE_REGION: "region",
    SOURCE_GLOBAL: "global",
}
_VERB = {ANCHOR_BOUGHT: "bought", ANCHOR_VIEWED: "viewed", ANCHOR_LIKED: "liked"}
_LIKED = _VERB[ANCHOR_LIKED]


def _anchors(model: ServingModel, batch: UserBatch, u: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Recent events first, then the user's strongest training interactions; kinds None
    means every anchor is a training interaction ("liked")."""
    rows, kinds = batch.anchors[u]
    row = int(batch.rows[u])
    if row < 0:
        return rows, kinds
    ui = model.bundle.user_items
    lo, hi = ui.indptr[row], ui.indptr[row + 1]
    seen = ui.indices[lo:hi]
    if hi - lo > MAX_HISTORY_ANCHORS:
        seen = seen[np.argsort(-ui.data[lo:hi], kind="stable")[:MAX_HISTORY_ANCHORS]]
    if not len(rows):
        return seen, None
    return (
        np.concatenate([rows, seen]),
        np.concatenate([kinds, np.full(len(seen), ANCHOR_LIKED, np.int8)]),
    )


def reasons_for(model: ServingModel, batch: UserBatch, ranked: Ranked, u: int) -> list[str]:
    """One reason per ranked item of user ``u``."""
    n = int(ranked.counts[u])
    sources = ranked.sources[u, :n].tolist()
    texts = [SOURCE_TEXT[s] for s in sources]
    if SOURCE_PERSONAL not in sources:
        return texts
    anchor_rows, anchor_kinds = _anchors(model, batch, u)
    if not len(anchor_rows):
        return texts
    personal: Sequence[int]
    if sources.count(SOURCE_PERSONAL) == n:  # the usual case: a slice, no index list
        personal = range(n)
        item_rows = ranked.items[u, :n]
    else:
        personal = [i for i, s in enumerate(sources) if s == SOURCE_PERSONAL]
        item_rows = ranked.items[u, personal]
    unit = model.item_unit  # take + dot: half the cost of fancy indexing + @ on this path
    sims = np.dot(unit.take(item_rows, axis=0), unit.take(anchor_rows, axis=0).T)
    # maximum.reduce: ndarray.max's Python wrapper (_methods._amax) costs as much again
    best, top = sims.argmax(axis=1).tolist(), np.maximum.reduce(sims, axis=1).tolist()
    names, rows = model.display_names, anchor_rows.tolist()
    kinds = anchor_kinds.tolist() if anchor_kinds is not None else None
    for i, (b, value) in enumerate(zip(best, top, strict=True)):
        if value >= SIMILARITY_THRESHOLD:  # only a clear match is worth naming
            verb = _VERB[kinds[b]] if kinds is not None else _LIKED
            texts[personal[i]] = f"similar to {names[rows[b]]} you {verb}"
    return texts


def row_source(ranked: Ranked, u: int) -> str:
    """The source that supplied the first item (what a metric label should say)."""
    if ranked.counts[u] == 0:
        return "empty"
    return SOURCE_NAMES[int(ranked.sources[u, 0])]
