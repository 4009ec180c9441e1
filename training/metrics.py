"""Top-k ranking metrics with binary relevance, averaged over evaluated users.

Conventions (the usual ones in the recommender literature, e.g. EASE and iALS papers):

- A user is evaluated when it has at least one relevant (held-out) item; users without
  held-out items are skipped, not counted as zeros.
- ``recommended`` is one ranked list per user (best first, length k; shorter lists
  count their missing positions as misses). Items seen in training are excluded from
  the lists before they get here (see ``training.evaluation``).
- ``hits@k`` = number of the first k recommended items that are relevant.

Per-user definitions, then averaged uniformly over evaluated users:

- ``precision@k = hits@k / k``
- ``recall@k    = hits@k / |relevant|``  (the plain definition; it cannot reach 1 when
  |relevant| > k)
- ``NDCG@k      = DCG@k / IDCG@k`` with ``DCG@k = sum_{r=1..k} rel_r / log2(r + 1)`` and
  ``IDCG@k`` the DCG of a perfect list, i.e. ``sum_{r=1..min(k, |relevant|)} 1/log2(r+1)``
- ``MAP@k``: ``AP@k = (1 / min(k, |relevant|)) * sum_{r=1..k} precision@r * rel_r``
- ``coverage@k`` = distinct items appearing in any user's top k / catalog size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from training.models.base import RecommenderBase


@dataclass(frozen=True)
class RankingMetrics:
    """Metrics at one cut-off k, averaged over ``users`` evaluated users."""

    k: int
    precision: float
    recall: float
    ndcg: float
    map: float
    coverage: float
    users: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def hit_matrix(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    """[n, k] bool: whether recommended[u, r] is in row u of ``relevant``.

    ``recommended`` is [n, >=k] int item indices (-1 = empty slot); ``relevant`` is an
    [n, I] sparse matrix whose nonzeros mark relevant items.
    """
    top = np.asarray(recommended)[:, :k]
    relevant = sp.csr_matrix(relevant)
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1])
    cols = top.ravel()
    filled = cols >= 0
    hits = np.zeros(cols.size, dtype=bool)
    # One vectorised lookup of every (user, item) cell instead of a set test per user.
    if filled.any():
        hits[filled] = np.asarray(relevant[rows[filled], cols[filled]]).ravel() != 0
    return hits.reshape(top.shape)


def ranking_metrics(
    recommended: np.ndarray, relevant: sp.csr_matrix, k: int, n_items: int | None = None
) -> RankingMetrics:
    """precision/recall/NDCG/MAP/coverage at ``k`` (definitions in the module docstring).

    ``recommended``: [n, >=k] int item indices per user (-1 pads short lists);
    ``relevant``: [n, I] sparse, nonzero = relevant; ``n_items`` defaults to I.
    """
    if k <= 0:
        raise ValueError("k must be positive")
    recommended = np.asarray(recommended)
    relevant = sp.csr_matrix(relevant)
    if recommended.ndim != 2 or recommended.shape[0] != relevant.shape[0]:
        raise ValueError("recommended must be [n, k] with one row per row of relevant")
    n_items = relevant.shape[1] if n_items is None else n_items
    n_rel = np.diff(relevant.indptr).astype(np.float64)
    hits = hit_matrix(recommended, relevant, k)
    evaluated = n_rel > 0
    top = recommended[:, :k]
    coverage = float(np.unique(top[top >= 0]).size / n_items) if n_items else 0.0
    if not evaluated.any():
        return RankingMetrics(k, 0.0, 0.0, 0.0, 0.0, coverage, 0)
    hits = hits[evaluated].astype(np.float64)
    if hits.shape[1] < k:  # short lists: the missing positions are misses
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    n_rel = n_rel[evaluated]
    n_hits = hits.sum(axis=1)
    disc = _discounts(k)
    ideal_len = np.minimum(n_rel, k).astype(np.int64)
    idcg = np.cumsum(disc)[ideal_len - 1]
    ndcg = (hits * disc).sum(axis=1) / idcg
    precision_at_r = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision_at_r * hits).sum(axis=1) / np.minimum(n_rel, k)
    return RankingMetrics(
        k=k,
        precision=float(np.mean(n_hits / k)),
        recall=float(np.mean(n_hits / n_rel)),
        ndcg=float(np.mean(ndcg)),
        map=float(np.mean(ap)),
        coverage=coverage,
        users=int(evaluated.sum()),
    )


def per_user_ndcg(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    """NDCG@k of each user with relevant items (the values ``ranking_metrics`` averages)."""
    relevant = sp.csr_matrix(relevant)
    relevant.eliminate_zeros()
    n_rel = np.diff(relevant.indptr)
    evaluated = n_rel > 0
    hits = hit_matrix(np.asarray(recommended), relevant, k)[evaluated].astype(np.float64)
    if hits.shape[1] < k:
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    disc = _discounts(k)
    idcg = np.cumsum(disc)[np.minimum(n_rel[evaluated], k) - 1]
    return np.asarray((hits * disc).sum(axis=1) / idcg)


def per_user_recall(recommended: np.ndarray, relevant: sp.csr_matrix, k: int) -> np.ndarray:
    """Recall@k (hits / |relevant|) of each user with relevant items, in the same user
    order as ``per_user_ndcg`` (the values ``ranking_metrics`` averages)."""
    relevant = sp.csr_matrix(relevant)
    relevant.eliminate_zeros()
    n_rel = np.diff(relevant.indptr)
    evaluated = n_rel > 0
    hits = hit_matrix(np.asarray(recommended), relevant, k)[evaluated]
    return np.asarray(hits.sum(axis=1) / n_rel[evaluated], dtype=np.float64)


def paired_difference(
    a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``a - b`` over the same users, its standard error and a paired bootstrap
    95% interval: whether two models' gap is outside the per-user noise."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size < 2:
        raise ValueError("a paired difference needs at least 2 users")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {
        "mean": float(diff.mean()),
        "se": float(diff.std(ddof=1) / np.sqrt(diff.size)),
        "ci_low": float(low),
        "ci_high": float(high),
        "users": int(diff.size),
        "better": int((diff > 0).sum()),
        "worse": int((diff < 0).sum()),
    }


def metrics_from_lists(
    recommended: Sequence[Sequence[int]],
    relevant: Sequence[Sequence[int]],
    k: int,
    n_items: int,
) -> RankingMetrics:
    """Convenience wrapper over python lists (tests, small reports)."""
    width = max(k, max((len(r) for r in recommended), default=0))
    rec = np.full((len(recommended), width), -1, dtype=np.int64)
    for u, row in enumerate(recommended):
        rec[u, : len(row)] = row
    rows = np.repeat(np.arange(len(relevant)), [len(r) for r in relevant])
    cols = np.fromiter((i for r in relevant for i in r), dtype=np.int64, count=rows.size)
    rel = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(len(relevant), n_items)
    )
    return ranking_metrics(rec, rel, k, n_items)


def format_table(rows: Mapping[str, Mapping[str, object]], k: int) -> str:
    """A fixed-width text table: one row per model, the metric columns at k."""
    cols = ["precision", "recall", "ndcg", "map", "coverage"]
    headers = ["model", *[f"{c}@{k}" for c in cols], "users", "fit_s"]
    body = []
    for name, row in rows.items():
        cells = [name]
        for c in cols:
            value = row.get(c)
            cells.append("n/a" if value is None else f"{float(value):.4f}")  # type: ignore[arg-type]
        users = row.get("users")
        fit_s = row.get("fit_s")
        cells.append("n/a" if users is None else str(users))
        cells.append("n/a" if fit_s is None else f"{float(fit_s):.1f}")  # type: ignore[arg-type]
        body.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def evaluate_scores(
    model: RecommenderBase,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int,
    max_users: int | None = None,
    seed: int = 0,
) -> RankingMetrics:
    """Metrics of ``model`` for the users with held-out items (seen items excluded)."""
    users = np.flatnonzero(np.diff(sp.csr_matrix(test).indptr) > 0)
    if max_users is not None and users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    ids, _ = model.recommend(users, train[users], N=k, filter_already_liked_items=True)
    return ranking_metrics(ids, test[users], k, n_items=train.shape[1])
