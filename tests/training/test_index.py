"""FAISS item index: flat vs HNSW by size, recall measured at build (training.index)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from recsvc.pipeline.similar import similar_items
from training.index import build_index, faiss_threads


def _exact_top(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Item vectors with cluster structure, like trained factors (not isotropic noise)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((32, d)) * 2
    x = centers[rng.integers(0, 32, n)] + rng.standard_normal((n, d))
    return x.astype(np.float32)


def test_small_catalog_gets_exact_index() -> None:
    items = _clustered(500, 8, 0)
    index, report = build_index(items, threshold=1000)
    assert report.kind == "flat" and report.recall_at_10 == 1.0
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == 500


@pytest.mark.slow
def test_hnsw_above_threshold_meets_recall_on_fresh_queries() -> None:
    items = _clustered(3000, 16, 1)
    users = _clustered(400, 16, 2)
    index, report = build_index(
        items, threshold=2000, user_factors=users, sample_queries=300, exact_if_faster=False
    )
    assert report.kind == "hnsw" and report.ef_search is not None
    assert report.recall_at_10 >= report.recall_target == 0.95
    # Independent check with brute-force numpy on queries the build never saw.
    fresh = _clustered(300, 16, 3)
    truth = _exact_top(fresh, items, 10)
    _, found = index.search(fresh, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.93, recall
    assert report.to_dict()["ef_search"] == report.ef_search


def test_similar_items_matches_brute_force_and_skips_itself() -> None:
    items = _clustered(300, 8, 4)
    index, _ = build_index(items)
    ids, scores = similar_items(index, items, 17, 5)
    sims = items @ items[17]
    sims[17] = -np.inf
    expected = np.argsort(-sims, kind="stable")[:5]
    assert 17 not in ids
    np.testing.assert_array_equal(np.sort(ids), np.sort(expected))
    np.testing.assert_allclose(scores, sims[ids], rtol=1e-5)
    assert np.all(np.diff(scores) <= 1e-6)
    assert len(similar_items(index, items, 0, 1000)[0]) == 299
    with pytest.raises(IndexError):
        similar_items(index, items, 300, 5)


def test_trained_bundle_similar_items(trained_bundle) -> None:  # type: ignore[no-untyped-def]
    ids, scores = similar_items(trained_bundle.index, trained_bundle.item_factors, 0, 10)
    expected = trained_bundle.item_factors @ trained_bundle.item_factors[0]
    np.testing.assert_allclose(scores, expected[ids], rtol=1e-4, atol=1e-5)
    assert trained_bundle.manifest["index"]["recall_at_10"] == 1.0


def test_faiss_threads_is_scoped() -> None:
    before = faiss.omp_get_max_threads()
    with faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with faiss_threads(None):
        assert faiss.omp_get_max_threads() == before
