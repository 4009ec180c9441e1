"""Batch-precomputed candidate lists (training.candidates) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.candidates import build_user_candidates, region_allowed, top_per_row


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, d)) * 2
    return (centers[rng.integers(0, 16, n)] + rng.standard_normal((n, d))).astype(np.float32)


def _brute_force(users: np.ndarray, items: np.ndarray, seen: sp.csr_matrix, count: int):  # type: ignore[no-untyped-def]
    scores = users @ items.T
    scores[seen.nonzero()] = -np.inf
    out = []
    for row in scores:
        finite = int(np.isfinite(row).sum())
        out.append(np.argsort(-row, kind="stable")[: min(count, finite)])
    return scores, out


def _seen(n_users: int, n_items: int, seed: int) -> sp.csr_matrix:
    seen = sp.random(n_users, n_items, density=0.05, format="lil", random_state=seed)
    seen[3, :] = 1.0  # a user who has seen everything gets an empty list
    seen[4, : n_items - 2] = 1.0  # and one with only two items left
    return sp.csr_matrix(seen, dtype=np.float32)


def test_exact_candidates_equal_brute_force() -> None:
    users, items = _clustered(500, 8, 1), _clustered(120, 8, 2)
    seen = _seen(500, 120, 3)
    matrix, report = build_user_candidates(users, items, seen, count=30, block_size=64)
    assert report.method == "exact" and report.recall == 1.0
    scores, expected = _brute_force(users, items, seen, 30)
    for u in range(500):
        got = matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]
        assert set(got) == set(expected[u]), u
        np.testing.assert_allclose(
            matrix.data[matrix.indptr[u] : matrix.indptr[u + 1]],
            scores[u, got],
            rtol=1e-4,
            atol=1e-4,
        )
    assert matrix.indptr[4] == matrix.indptr[3] + 0 and matrix.indptr[5] - matrix.indptr[4] == 2


@pytest.mark.slow
def test_ivf_candidates_meet_their_recall_target_on_all_users() -> None:
    users, items = _clustered(600, 8, 4), _clustered(2000, 8, 5)
    seen = _seen(600, 2000, 6)
    matrix, report = build_user_candidates(
        users, items, seen, count=50, method="ivf", recall_target=0.9, sample_users=150
    )
    assert report.method == "ivf" and report.nprobe is not None and report.recall >= 0.9
    _, expected = _brute_force(users, items, seen, 50)
    recall = np.mean(
        [
            len(set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]]) & set(e))
            / max(1, len(e))
            for u, e in enumerate(expected)
            if len(e)
        ]
    )
    assert recall >= 0.85, recall  # measured on a sample, checked here on everyone
    flat_seen = set(zip(*seen.nonzero(), strict=True))
    rows = np.repeat(np.arange(600), np.diff(matrix.indptr))
    assert not any((r, c) in flat_seen for r, c in zip(rows, matrix.indices, strict=True))


def test_auto_switches_on_size() -> None:
    users, items = _clustered(50, 4, 7), _clustered(400, 4, 8)
    seen = _seen(50, 400, 9)
    _, small = build_user_candidates(users, items, seen, count=5, exact_max_cells=1e9)
    _, big = build_user_candidates(users, items, seen, count=5, exact_max_cells=10)
    assert small.method == "exact" and big.method == "ivf"


def test_region_lists_respect_availability_and_order() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    availability = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool))
    everywhere = np.array([False, False, False, True])
    allowed = region_allowed(availability, everywhere)
    lists = top_per_row(scores, count=3, allowed=allowed)
    assert lists.indices[lists.indptr[0] : lists.indptr[1]].tolist() == [3, 2, 0]
    assert lists.indices[lists.indptr[1] : lists.indptr[2]].tolist() == [1, 2, 3]
    np.testing.assert_allclose(lists.data[:3], [0.7, 0.5, 0.1])
