"""Stages 3-4, score and order: top-k of the allowed candidates, then fall back.

A user whose filtered candidates cannot fill k slots gets, in turn, a FAISS search with
the same vector (personal users) and then regional/global popularity, each pass under
the same filters (:func:`recsvc.pipeline.filters.allowed_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsvc.pipeline.filters import allowed_mask
from recsvc.pipeline.model import SOURCE_GLOBAL, SOURCE_PERSONAL, SOURCE_REGION, ServingModel
from recsvc.pipeline.regions import popularity_rows
from recsvc.pipeline.retrieve import Candidates, search_index
from recsvc.pipeline.users import UserBatch

_FIRST_POPULARITY_CHUNK = 256
_FIRST = np.zeros(1, np.int64)


@dataclass
class Ranked:
    """Top-k per user, best first; slots past ``counts[b]`` are -1."""

    items: np.ndarray  # [B, k] int64
    scores: np.ndarray  # [B, k] float32
    sources: np.ndarray  # [B, k] int8
    counts: np.ndarray  # [B] int64


def top_k(cands: Candidates, allowed: np.ndarray, k: int) -> Ranked:
    """The ``k`` best allowed candidates of every row, sorted by score; equal scores keep
    their candidate order (the order a stable sort of the whole row gives), so a user's
    answer does not depend on the other users of the batch."""
    if cands.scores.shape[0] == 1:
        return _top_k_one(cands, allowed, k)
    scores = np.where(allowed, cands.scores, -np.inf)
    rows = np.arange(scores.shape[0])[:, None]
    # A whole-row stable sort (a few µs for a row of a few hundred candidates, measured no
    # slower in export than partitioning first) is what makes ties deterministic.
    pick = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    counts = np.minimum(allowed.sum(axis=1), k)
    items, top, sources = cands.items[rows, pick], scores[rows, pick], cands.sources[rows, pick]
    slots = pick.shape[1]
    if slots < k:  # fewer candidates than k: widen to k slots
        widen = ((0, 0), (0, k - slots))
        items = np.pad(items, widen, constant_values=-1)
        top, sources = np.pad(top, widen), np.pad(sources, widen)
    if (counts < k).any():
        empty = np.arange(k)[None, :] >= counts[:, None]
        items[empty], top[empty] = -1, 0.0
    return Ranked(items, top.astype(np.float32, copy=False), sources, counts.astype(np.int64))


def _top_k_one(cands: Candidates, allowed: np.ndarray, k: int) -> Ranked:
    """:func:`top_k` of one row (serving), the same answer in half the numpy calls
    (docs/benchmarks/serving.md, "One function per rule"): disallowed candidates sort
    last, the allowed ones by score, ties in candidate order."""
    ok = allowed[0]
    neg = np.where(ok, -cands.scores[0], np.inf)
    n = min(int(np.count_nonzero(ok)), k)
    pick = neg.argsort(kind="stable")[:n]
    items = np.full((1, k), -1, np.int64)
    top = np.zeros((1, k), np.float32)
    sources = np.zeros((1, k), np.int8)
    items[0, :n] = cands.items[0, pick]
    top[0, :n] = -neg[pick]
    sources[0, :n] = cands.sources[0, pick]
    return Ranked(items, top, sources, np.array([n], np.int64))


def listed_top_k(model: ServingModel, batch: UserBatch, k: int) -> Ranked | None:
    """The serving case in one pass, or None when it does not apply.

    For one known user without fold-in whose precomputed list is stored best first with
    live scores, retrieve + allowed_mask + top_k + fill_short reduce to "the first k
    allowed items of the list, in list order" (a stable sort of a non-increasing row keeps
    its order). None when the list holds fewer than k allowed items: the general path
    then fills the rest."""
    if not (model.candidates_sorted and model.stored_scores_live) or len(batch) != 1:
        return None
    row = int(batch.rows[0])
    if row < 0 or batch.folded[0] or not batch.personal[0] or len(batch.revealed[0]):
        return None  # the list alone is not the candidate set (see retrieve.with_revealed)
    cands = model.bundle.candidates
    lo, hi = int(cands.indptr[row]), int(cands.indptr[row + 1])
    if hi - lo < k:
        return None
    # The first k allowed items of the list lie in its head unless many are blocked: check
    # a window of 2k first (a tenth of the row: fewer scattered mask and data reads), then
    # the whole row. Same answer either way: the first k allowed, in list order.
    end = min(hi, lo + 2 * k)
    items = cands.indices[lo:end]
    pick = allowed_mask(model, batch, _FIRST, items[None, :])[0].nonzero()[0][:k]
    if len(pick) < k and end < hi:
        end = hi
        items = cands.indices[lo:hi]
        pick = allowed_mask(model, batch, _FIRST, items[None, :])[0].nonzero()[0][:k]
    if len(pick) < k:
        return None
    sources, counts = _listed_constants(k)
    return Ranked(
        items.take(pick).astype(np.int64)[None, :],
        cands.data[lo:end].take(pick)[None, :],
        sources,
        counts,
    )


_LISTED: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _listed_constants(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``listed_top_k``'s sources (all personal) and counts (k) rows, built once per k and
    read-only: every answer of that k shares them."""
    found = _LISTED.get(k)
    if found is None:
        sources, counts = np.full((1, k), SOURCE_PERSONAL, np.int8), np.array([k], np.int64)
        sources.flags.writeable = counts.flags.writeable = False
        if len(_LISTED) >= 1024:
            _LISTED.clear()
        found = _LISTED[k] = (sources, counts)
    return found


def _search_fill(
    model: ServingModel, batch: UserBatch, ranked: Ranked, users: np.ndarray, k: int
) -> None:
    extra = max(len(batch.blocked[u]) for u in users)
    n = k + extra + model.cold_candidates.shape[1]
    items, scores = search_index(model, batch.vectors[users], n)
    found = top_k(
        Candidates(items, scores, np.zeros(items.shape, np.int8)),
        allowed_mask(model, batch, users, items),
        k,
    )
    better = found.counts > ranked.counts[users]
    for name in ("items", "scores", "sources", "counts"):
        getattr(ranked, name)[users[better]] = getattr(found, name)[better]


def _popularity_fill(model: ServingModel, batch: UserBatch, ranked: Ranked, u: int, k: int) -> None:
    table_row = int(popularity_rows(batch.regions[u], model.n_regions))
    source = SOURCE_REGION if table_row < model.n_regions else SOURCE_GLOBAL
    order = model.popularity_order[table_row]
    start, chunk = 0, _FIRST_POPULARITY_CHUNK
    while ranked.counts[u] < k and start < len(order):
        items = order[start : start + chunk].astype(np.int64)
        ok = allowed_mask(model, batch, np.array([u]), items[None, :])[0]
        ok &= ~np.isin(items, ranked.items[u, : ranked.counts[u]])
        take = items[ok][: k - ranked.counts[u]]
        lo, hi = ranked.counts[u], ranked.counts[u] + len(take)
        ranked.items[u, lo:hi] = take
        ranked.scores[u, lo:hi] = model.popularity_scores[table_row, take]
        ranked.sources[u, lo:hi] = source
        ranked.counts[u] = hi
        start, chunk = start + chunk, chunk * 4


def fill_short(model: ServingModel, batch: UserBatch, ranked: Ranked, k: int) -> int:
    """Top up rows with fewer than k items; returns how many rows needed it."""
    short = np.flatnonzero(ranked.counts < k)
    if not len(short):
        return 0
    personal = short[batch.personal[short]]
    if len(personal):
        _search_fill(model, batch, ranked, personal, k)
    for u in np.flatnonzero(ranked.counts < k):
        _popularity_fill(model, batch, ranked, int(u), k)
    return len(short)
