"""FAISS item index: exact below a size threshold, HNSW above, recall measured at build.

Scores are inner products of factor vectors (what ALS/BPR rank by), so the index is
``IndexFlatIP`` (exact) for catalogs under ``threshold`` items and ``IndexHNSWFlat`` with
``METRIC_INNER_PRODUCT`` above it. For HNSW, ``efSearch`` is the smallest value of a ladder
whose recall@10 against exact search reaches ``recall_target`` on one sample of queries
(user vectors when given, item vectors otherwise); the recall written to the manifest is
measured again on a *different* sample, so it is not the number the choice was tuned on.
Each sample is 500 queries (5,000 top-10 slots: standard error ~0.003 at recall 0.97); their
exact answers, a full scan each, come from one batched search.
If no ``efSearch`` reaches the target, or the one that does makes a query slower than an
exact scan (it happens on sparse data), the exact index is shipped instead (recall 1.0).

FAISS threads: nothing here changes the process-wide OpenMP setting unless the caller
passes ``threads`` (batch jobs do; a server searching the index does not).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 50_000
DEFAULT_RECALL_TARGET = 0.95
FLAT_TIMING_QUERIES = 50
HNSW_M = 32
EF_CONSTRUCTION = 100
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class IndexReport:
    """What was built and how good it is (goes to manifest["index"])."""

    kind: str  # "flat" | "hnsw"
    n_items: int
    dim: int
    threshold: int
    recall_at_10: float  # vs exact, on held-out sample queries (1.0 for flat)
    recall_target: float
    ef_search: int | None
    hnsw_m: int | None
    ef_construction: int | None
    sample_queries: int
    build_seconds: float
    query_microseconds: float  # mean single-query search time on the sample, one thread
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Set FAISS's OpenMP thread count for a batch block, restoring it afterwards."""
    if threads is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _flat_report(
    n: int,
    d: int,
    threshold: int,
    recall_target: float,
    sample_queries: int,
    build_seconds: float,
    query_microseconds: float,
    note: str = "",
) -> IndexReport:
    """Report for a shipped exact index (recall 1 by construction)."""
    return IndexReport(
        kind="flat",
        n_items=n,
        dim=d,
        threshold=threshold,
        recall_at_10=1.0,
        recall_target=recall_target,
        ef_search=None,
        hnsw_m=None,
        ef_construction=None,
        sample_queries=sample_queries,
        build_seconds=build_seconds,
        query_microseconds=query_microseconds,
        note=note,
    )


def build_index(
    item_factors: np.ndarray,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    recall_target: float = DEFAULT_RECALL_TARGET,
    hnsw_m: int = HNSW_M,
    ef_construction: int = EF_CONSTRUCTION,
    user_factors: np.ndarray | None = None,
    sample_queries: int = 500,
    seed: int = 0,
    threads: int | None = None,
    exact_if_faster: bool = True,
) -> tuple[Any, IndexReport]:
    """Build the item index over ``item_factors`` ([I, d] float32) and measure its recall.

    ``exact_if_faster``: ship the exact index when HNSW at the chosen efSearch answers a
    single query slower than a full scan (``False`` keeps HNSW regardless).
    """
    import faiss

    vectors = np.ascontiguousarray(item_factors, dtype=np.float32)
    n, d = vectors.shape
    start = time.perf_counter()
    with faiss_threads(threads):
        if n < threshold:
            flat = faiss.IndexFlatIP(d)
            flat.add(vectors)
            return flat, _flat_report(
                n,
                d,
                threshold,
                recall_target,
                0,
                time.perf_counter() - start,
                _query_time(flat, _queries(vectors, user_factors, 200, seed)),
            )
        hnsw = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = ef_construction
        hnsw.add(vectors)
        build_seconds = time.perf_counter() - start
        exact = faiss.IndexFlatIP(d)
        exact.add(vectors)
        tune_q = _queries(vectors, user_factors, sample_queries, seed)
        check_q = _queries(vectors, user_factors, sample_queries, seed + 1)
        # Exact top-10 of both samples in one pass over the items (the costly part of the
        # measurement: a full scan per query).
        _, truth = exact.search(np.vstack([tune_q, check_q]), 10)
        tune_truth, check_truth = truth[: len(tune_q)], truth[len(tune_q) :]
        # A small margin so the check on fresh queries lands above the target too.
        ef = _choose_ef(hnsw, tune_q, tune_truth, min(1.0, recall_target + 0.01))
        if ef is None:
            return exact, _flat_report(
                n,
                d,
                threshold,
                recall_target,
                len(check_q),
                time.perf_counter() - start,
                _query_time(exact, check_q[:FLAT_TIMING_QUERIES]),
                note=f"HNSW missed recall {recall_target} at efSearch {EF_LADDER[-1]}; exact",
            )
        hnsw.hnsw.efSearch = ef
        recall = _recall(hnsw.search(check_q, 10)[1], check_truth)
        hnsw_us = _query_time(hnsw, check_q[:200])
        # A scan costs the same for every query: a few give its time.
        flat_us = _query_time(exact, check_q[:FLAT_TIMING_QUERIES])
    if exact_if_faster and hnsw_us >= flat_us:
        # Hard factors (sparse data) can need an efSearch so high that the graph walk is
        # slower than scanning everything: then exact is both better and faster.
        return exact, _flat_report(
            n,
            d,
            threshold,
            recall_target,
            len(check_q),
            time.perf_counter() - start,
            flat_us,
            note=f"HNSW needed efSearch {ef} ({hnsw_us:.0f} us/query) vs exact "
            f"{flat_us:.0f} us/query; exact shipped",
        )
    return hnsw, IndexReport(
        kind="hnsw",
        n_items=n,
        dim=d,
        threshold=threshold,
        recall_at_10=recall,
        recall_target=recall_target,
        ef_search=ef,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        sample_queries=len(check_q),
        build_seconds=build_seconds,
        query_microseconds=hnsw_us,
        note=f"exact: {flat_us:.0f} us/query",
    )


def _queries(items: np.ndarray, users: np.ndarray | None, count: int, seed: int) -> np.ndarray:
    """Recall is measured on the vectors the index is really queried with."""
    rng = np.random.default_rng(seed)
    pool = users if users is not None and len(users) else items
    take = min(count, len(pool))
    rows = np.sort(rng.choice(len(pool), size=take, replace=False))
    return np.ascontiguousarray(pool[rows], dtype=np.float32)


def _choose_ef(hnsw: Any, queries: np.ndarray, truth: np.ndarray, target: float) -> int | None:
    for ef in EF_LADDER:
        hnsw.hnsw.efSearch = ef
        _, found = hnsw.search(queries, 10)
        if _recall(found, truth) >= target:
            return ef
    return None


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    if truth.size == 0:
        return 1.0
    # [n, k, k] comparison instead of a Python loop of intersect1d over the queries.
    valid = truth >= 0
    hit = ((found[:, :, None] == truth[:, None, :]) & (found[:, :, None] >= 0)).any(axis=1)
    return float((hit & valid).sum() / max(1, int(valid.sum())))


def _query_time(index: Any, queries: np.ndarray) -> float:
    """Mean microseconds of one-at-a-time queries (the serving pattern), single thread."""
    if len(queries) == 0:
        return 0.0
    with faiss_threads(1):
        start = time.perf_counter()
        for q in queries:
            index.search(q[None, :], 10)
        return (time.perf_counter() - start) / len(queries) * 1e6
