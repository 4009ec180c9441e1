"""Stage 1, retrieve: a candidate list per user, scored for that user.

Known users re-score their precomputed candidates (``bundle.candidates``) with their
vector; users whose vector was folded in from recent events (known or new) search the
FAISS index with it instead (one search, only for users with fresh events). Cold users
are ranked by the cold-start source ``train`` chose on held-out whole users
(``bundle.cold_start``: popularity within profile segments, a map from features into the CF
space, the LightFM hybrid, or global popularity) over every item their region may show.
Bundles without that choice keep the older rule: their region's candidates
(``region_candidates``), scored by the hybrid model from their features when it knows any,
else by regional popularity; no region means global popularity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from recsvc.bundle.scoring import cold_start_scores, profile_key, profile_known
from recsvc.pipeline.model import (
    SOURCE_GLOBAL,
    SOURCE_PERSONAL,
    SOURCE_PROFILE,
    SOURCE_REGION,
    ServingModel,
)
from recsvc.pipeline.regions import available_items, popularity_rows
from recsvc.pipeline.users import UserBatch

_MAX_COLD_LISTS = 4096  # cached cold-start lists per model (cleared when full)
_GATHER_FLOATS = 1 << 22  # 16 MiB of float32 per gather in score_rows


@dataclass
class Candidates:
    """Per-user candidate item rows (-1 padded) with scores and the source of each."""

    items: np.ndarray  # [B, C] int64
    scores: np.ndarray  # [B, C] float32, -inf where padded
    sources: np.ndarray  # [B, C] int8


def search_index(model: ServingModel, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` items by inner product for each vector (FAISS), -1 padded."""
    n = max(1, min(n, model.n_items))
    scores, items = model.bundle.index.search(np.ascontiguousarray(vectors, np.float32), n)
    items = items.astype(np.int64, copy=False)
    return items, np.where(items >= 0, scores, -np.inf).astype(np.float32)


def score_rows(factors: np.ndarray, items: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``factors[items[b, c]] · vectors[b]`` for every row, gathering at most
    ``_GATHER_FLOATS`` factor values at a time (export ranks thousands of users at once;
    a [users x candidates x d] gather of all of them would not fit in memory)."""
    n, width = items.shape
    out = np.empty((n, width), np.float32)
    step = max(1, _GATHER_FLOATS // max(1, width * factors.shape[1]))
    for lo in range(0, n, step):
        gathered = factors[np.maximum(items[lo : lo + step], 0)]
        out[lo : lo + step] = np.matmul(gathered, vectors[lo : lo + step, :, None])[:, :, 0]
    return out


def _padded_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([n, w] positions into a CSR's indices/data, [n, w] valid) of ``rows``, padded to the
    longest row (w = 0 when every row is empty; padding positions are 0)."""
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - starts
    width = int(lengths.max()) if len(lengths) else 0
    offsets = np.arange(width)
    valid = offsets[None, :] < lengths[:, None]
    return np.where(valid, starts[:, None] + offsets[None, :], 0), valid


def _personal(model: ServingModel, batch: UserBatch, users: np.ndarray) -> tuple:
    cands = model.bundle.candidates
    if len(users) == 1:  # one user (serving): a slice of its row, same answer as below
        u = int(users[0])
        row = int(batch.rows[u])
        lo, hi = cands.indptr[row], cands.indptr[row + 1]
        if hi > lo:
            items = cands.indices[lo:hi].astype(np.int64)
            if model.stored_scores_live:  # the user's vector is the model's: scores as stored
                return items[None, :], cands.data[lo:hi][None, :]
            return items[None, :], (model.item_factors[items] @ batch.vectors[u])[None, :]
    positions, valid = _padded_positions(cands.indptr, batch.rows[users])
    if positions.shape[1] == 0:
        items, scores = search_index(model, batch.vectors[users], model.cold_candidates.shape[1])
        return items, scores
    items = np.where(valid, cands.indices[positions], -1).astype(np.int64)
    if model.stored_scores_live:
        scores = cands.data[positions]
    else:
        scores = score_rows(model.item_factors, items, batch.vectors[users])
    return items, np.where(valid, scores, -np.inf).astype(np.float32)


def _chosen_cold(model: ServingModel, batch: UserBatch, users: np.ndarray) -> tuple:
    """Candidates of the cold-start source chosen at training, scored over the whole
    catalog from each user's merged features, best first among the items its region may
    show. A user none of whose features the source knows gets global popularity (and is
    labelled so)."""
    width = model.cold_candidates.shape[1]
    items = np.full((len(users), width), -1, np.int64)
    scores = np.full((len(users), width), -np.inf, np.float32)
    sources = np.full((len(users), width), SOURCE_GLOBAL, np.int8)
    for i, u in enumerate(users.tolist()):
        region = int(batch.regions[u])
        key = (region, profile_key(model.bundle, batch.features[u]))
        found = model.cold_lists.get(key)
        if found is None:
            found = _chosen_list(model, region, batch.features[u], width)
            if len(model.cold_lists) >= _MAX_COLD_LISTS:
                model.cold_lists.clear()
            model.cold_lists[key] = found
        top, top_scores, source = found
        items[i, : len(top)], scores[i, : len(top)], sources[i] = top, top_scores, source
    return items, scores, sources


def _chosen_list(
    model: ServingModel, region: int, features: Mapping[str, str], width: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(items best first, their scores, source) of one cold user of ``region``."""
    if profile_known(model.bundle, features):
        source, mine = SOURCE_PROFILE, cold_start_scores(model.bundle, features)
    else:
        source, mine = SOURCE_GLOBAL, np.asarray(model.bundle.popularity, dtype=np.float32)
    allowed = available_items(model.bundle.available_everywhere, model.sold_in, region)
    mine = np.where(allowed, mine, -np.inf)
    n = min(width, int(allowed.sum()))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), source
    # The n best, ties at the cut broken by item row (argpartition alone is arbitrary).
    cut = np.partition(mine, len(mine) - n)[len(mine) - n]
    above = np.flatnonzero(mine > cut)
    top = np.concatenate([above, np.flatnonzero(mine == cut)[: n - len(above)]])
    top = top[np.argsort(-mine[top], kind="stable")]
    return top, mine[top].astype(np.float32), source


def _cold(model: ServingModel, batch: UserBatch, users: np.ndarray) -> tuple:
    if model.bundle.cold_start is None:
        return _popular_cold(model, batch, users)
    return _chosen_cold(model, batch, users)


def _popular_cold(model: ServingModel, batch: UserBatch, users: np.ndarray) -> tuple:
    """Region (else global) popularity candidates, re-scored by the hybrid for users it
    knows (bundles without a trained cold-start choice)."""
    table_rows = popularity_rows(batch.regions[users], model.n_regions)
    items = model.cold_candidates[table_rows]
    valid = items >= 0
    safe = np.maximum(items, 0)
    scores = model.popularity_scores[table_rows[:, None], safe]
    sources = np.where(table_rows < model.n_regions, SOURCE_REGION, SOURCE_GLOBAL)
    sources = np.repeat(sources[:, None], items.shape[1], axis=1).astype(np.int8)
    hybrid = model.bundle.hybrid
    for i, u in enumerate(users):
        vec = batch.profile_vectors[u]
        if vec is not None and hybrid is not None:
            scores[i] = hybrid.item_representations[safe[i]] @ vec + hybrid.item_biases[safe[i]]
            sources[i] = SOURCE_PROFILE
    return items, np.where(valid, scores, -np.inf).astype(np.float32), sources


def retrieve(model: ServingModel, batch: UserBatch) -> Candidates:
    """Candidates for every user of ``batch``: its source's list, plus the training-history
    items the user's seen rule leaves visible (:func:`with_revealed`)."""
    return with_revealed(model, batch, _retrieve(model, batch))


def _retrieve(model: ServingModel, batch: UserBatch) -> Candidates:
    listed = batch.personal & (batch.rows >= 0) & ~batch.folded
    personal = np.flatnonzero(listed)
    # Users whose vector moved with recent events search the index: their precomputed list
    # was ranked for the old vector and would hide what they just showed interest in.
    folded = np.flatnonzero(batch.personal & ~listed)
    cold = np.flatnonzero(~batch.personal)
    groups = []
    if len(personal):
        items, scores = _personal(model, batch, personal)
        groups.append((personal, items, scores, np.full(items.shape, SOURCE_PERSONAL, np.int8)))
    if len(folded):
        items, scores = search_index(model, batch.vectors[folded], model.cold_candidates.shape[1])
        groups.append((folded, items, scores, np.full(items.shape, SOURCE_PERSONAL, np.int8)))
    if len(cold):
        groups.append((cold, *_cold(model, batch, cold)))
    if len(groups) == 1 and len(groups[0][0]) == len(batch):
        _, items, scores, sources = groups[0]
        return Candidates(items, scores, sources)
    width = max((g[1].shape[1] for g in groups), default=1)
    out = Candidates(
        np.full((len(batch), width), -1, np.int64),
        np.full((len(batch), width), -np.inf, np.float32),
        np.zeros((len(batch), width), np.int8),
    )
    for users, items, scores, sources in groups:
        w = items.shape[1]
        out.items[users, :w], out.scores[users, :w], out.sources[users, :w] = items, scores, sources
    return out


def with_revealed(model: ServingModel, batch: UserBatch, cands: Candidates) -> Candidates:
    """``cands`` plus each known user's ``batch.revealed`` items: the training-history items
    the seen rule leaves visible (every one of them for a request that keeps seen items:
    an experiment's ``exclude_seen: false``, export's ``--include-seen``).

    The precomputed candidate lists leave the whole training history out, so these are
    added back, scored with the user's live vector; one already a candidate is kept once.
    """
    users = np.flatnonzero([len(r) > 0 for r in batch.revealed])
    if not len(users):
        return cands
    width = max(len(batch.revealed[u]) for u in users.tolist())
    extra_items = np.full((len(batch), width), -1, np.int64)
    for u in users.tolist():
        extra_items[u, : len(batch.revealed[u])] = batch.revealed[u]
    valid = extra_items[users] >= 0
    scores = score_rows(model.item_factors, extra_items[users], batch.vectors[users])
    extra_scores = np.full((len(batch), width), -np.inf, np.float32)
    extra_scores[users] = np.where(valid, scores, -np.inf)
    duplicate = (extra_items[:, :, None] == cands.items[:, None, :]).any(axis=2)
    extra_items[duplicate] = -1
    extra_scores[duplicate] = -np.inf
    return Candidates(
        np.concatenate([cands.items, extra_items], axis=1),
        np.concatenate([cands.scores, extra_scores], axis=1),
        np.concatenate(
            [cands.sources, np.full(extra_items.shape, SOURCE_PERSONAL, np.int8)], axis=1
        ),
    )
