"""Candidate lists precomputed in batch at train time (DESIGN.md, "per-call budget").

An ANN search per Recommend call costs more than the serving budget, so the offline job
ranks the whole catalog once per known user (top ``count`` by user·item score, seen items
removed) and once per region (for users known only by region). Serving re-scores these few
hundred candidates with the live user vector and falls back to FAISS only when filters
exhaust the list.

Both are CSR matrices (``[U, I]`` and ``[R, I]``) whose rows hold item indices in
*descending score order* (not column order) with the score as data.

Per-user lists use an exact FAISS ``IndexFlatIP`` batch search (blocked BLAS + a heap per
query): users are processed in blocks sorted by how many items they have seen, so each
block asks for ``count + max_seen_in_block`` neighbours and can drop the seen ones and
still keep ``count``. Memory is the output plus one block's results.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import scipy.sparse as sp

from training.index import faiss_threads

log = logging.getLogger(__name__)

DEFAULT_COUNT = 200


def user_candidates(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    user_items: sp.csr_matrix,
    *,
    count: int = DEFAULT_COUNT,
    block_size: int = 4096,
    threads: int | None = None,
    progress: bool = False,
) -> sp.csr_matrix:
    """Top-``count`` unseen items per user by inner product, as a score-ordered CSR."""
    import faiss

    users = np.ascontiguousarray(user_factors, dtype=np.float32)
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    seen = sp.csr_matrix(user_items)
    n_users, n_items = seen.shape
    if users.shape[0] != n_users or items.shape[0] != n_items:
        raise ValueError(
            f"factor shapes {users.shape}/{items.shape} do not match user_items {seen.shape}"
        )
    seen_counts = np.diff(seen.indptr).astype(np.int64)
    # Every user gets min(count, unseen items) entries: known before searching, so the
    # output is allocated once and filled in place.
    sizes = np.minimum(count, np.maximum(n_items - seen_counts, 0))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(sizes, out=indptr[1:])
    out_idx = np.full(int(indptr[-1]), -1, dtype=np.int32)
    out_score = np.zeros(int(indptr[-1]), dtype=np.float32)

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    order = np.argsort(seen_counts, kind="stable")
    started = time.perf_counter()
    last_log = started
    with faiss_threads(threads):
        for start in range(0, n_users, block_size):
            rows = order[start : start + block_size]
            _fill_block(index, users, seen, rows, sizes, indptr, out_idx, out_score, n_items)
            now = time.perf_counter()
            if progress and now - last_log > 10:
                done = min(n_users, start + block_size)
                rate = done / (now - started)
                print(
                    f"  candidates: {done}/{n_users} users ({rate:,.0f}/s)",
                    file=sys.stderr,
                    flush=True,
                )
                last_log = now
    return _compact(n_users, n_items, indptr, out_idx, out_score)


def _fill_block(
    index: object,
    users: np.ndarray,
    seen: sp.csr_matrix,
    rows: np.ndarray,
    sizes: np.ndarray,
    indptr: np.ndarray,
    out_idx: np.ndarray,
    out_score: np.ndarray,
    n_items: int,
) -> None:
    block_seen = seen[rows]
    max_seen = int(np.diff(block_seen.indptr).max(initial=0))
    k = min(n_items, int(sizes[rows].max(initial=0)) + max_seen)
    if k == 0:
        return
    scores, labels = index.search(users[rows], k)  # type: ignore[attr-defined]
    # Seen membership by (row position, item) keys; sorted-search beats a dense mask here.
    row_pos = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(block_seen.indptr))
    seen_keys = np.sort(row_pos * n_items + block_seen.indices)
    keys = np.arange(len(rows), dtype=np.int64)[:, None] * n_items + labels
    hit = np.searchsorted(seen_keys, keys)
    is_seen = (hit < len(seen_keys)) & (seen_keys[np.minimum(hit, len(seen_keys) - 1)] == keys)
    valid = (labels >= 0) & ~is_seen
    want = sizes[rows][:, None]
    keep = valid & (np.cumsum(valid, axis=1) <= want)
    got = keep.sum(axis=1)
    # Row-major boolean selection keeps each row's items in score order.
    starts = indptr[rows]
    offsets = np.arange(int(got.sum()), dtype=np.int64) - np.repeat(np.cumsum(got) - got, got)
    dest = np.repeat(starts, got) + offsets
    out_idx[dest] = labels[keep]
    out_score[dest] = scores[keep]


def _compact(
    n_rows: int, n_items: int, indptr: np.ndarray, idx: np.ndarray, score: np.ndarray
) -> sp.csr_matrix:
    """Drop slots a search left empty (only with NaN factors) and build the CSR."""
    empty = idx < 0
    if empty.any():
        log.warning("candidates: %d empty slots (NaN factors?) dropped", int(empty.sum()))
        row_of = np.repeat(np.arange(n_rows), np.diff(indptr))
        counts = np.bincount(row_of[~empty], minlength=n_rows)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        idx, score = idx[~empty], score[~empty]
    return sp.csr_matrix((score, idx, indptr), shape=(n_rows, n_items), copy=False)


def top_per_row(
    scores: np.ndarray, *, count: int = DEFAULT_COUNT, allowed: np.ndarray | None = None
) -> sp.csr_matrix:
    """Top-``count`` columns of each row of a dense ``[R, I]`` score matrix, score-ordered.

    ``allowed`` ([R, I] bool) removes items a row may not get (e.g. unavailable in the
    region). Used for region candidates, where R is small.
    """
    scores = np.asarray(scores, dtype=np.float32)
    n_rows, n_items = scores.shape
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for r in range(n_rows):
        row = scores[r]
        cols = np.flatnonzero(allowed[r]) if allowed is not None else np.arange(n_items)
        take = min(count, len(cols))
        if take:
            part = np.argpartition(-row[cols], take - 1)[:take] if take < len(cols) else None
            chosen = cols[part] if part is not None else cols
            # Ties broken by item index so the lists are deterministic.
            chosen = chosen[np.lexsort((chosen, -row[chosen]))]
        else:
            chosen = np.empty(0, dtype=np.int64)
        indices.append(chosen.astype(np.int32))
        data.append(row[chosen])
        indptr.append(indptr[-1] + len(chosen))
    return sp.csr_matrix(
        (
            np.concatenate(data) if data else np.empty(0, np.float32),
            np.concatenate(indices) if indices else np.empty(0, np.int32),
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(n_rows, n_items),
        copy=False,
    )


def region_allowed(
    item_availability: sp.csr_matrix, available_everywhere: np.ndarray
) -> np.ndarray:
    """[R, I] bool: item i may be recommended in region r."""
    allowed = np.asarray(sp.csr_matrix(item_availability).T.toarray(), dtype=bool)
    allowed |= np.asarray(available_everywhere, dtype=bool)[None, :]
    return allowed
