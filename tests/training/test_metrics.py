"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import format_table, metrics_from_lists

LOG2 = math.log2


def test_single_user_hand_computed() -> None:
    # relevant {1, 3, 5}; ranked [1, 2, 3, 4] at k=4 -> hits at ranks 1 and 3
    m = metrics_from_lists([[1, 2, 3, 4]], [[1, 3, 5]], k=4, n_items=10)
    assert m.precision == pytest.approx(2 / 4)
    assert m.recall == pytest.approx(2 / 3)
    dcg = 1 / LOG2(2) + 1 / LOG2(4)
    idcg = 1 / LOG2(2) + 1 / LOG2(3) + 1 / LOG2(4)
    assert m.ndcg == pytest.approx(dcg / idcg)
    # AP@4 = (P@1 + P@3) / min(4, 3) = (1 + 2/3) / 3
    assert m.map == pytest.approx((1 + 2 / 3) / 3)
    assert m.coverage == pytest.approx(4 / 10)
    assert m.users == 1


def test_idcg_caps_at_k_when_many_relevant() -> None:
    # 5 relevant, k=2, both recommended relevant -> perfect NDCG and MAP, recall 2/5
    m = metrics_from_lists([[0, 1]], [[0, 1, 2, 3, 4]], k=2, n_items=5)
    assert m.ndcg == pytest.approx(1.0)
    assert m.map == pytest.approx(1.0)
    assert m.recall == pytest.approx(2 / 5)
    assert m.precision == pytest.approx(1.0)


def test_average_over_users_skips_users_without_relevant_items() -> None:
    m = metrics_from_lists([[0, 1], [2, 3], [0, 1]], [[1], [2], []], k=2, n_items=4)
    assert m.users == 2
    # user 0: hit at rank 2 -> ndcg = (1/log2 3) / 1; user 1: hit at rank 1 -> 1
    assert m.ndcg == pytest.approx((1 / LOG2(3) + 1.0) / 2)
    assert m.precision == pytest.approx(0.5)
    assert m.map == pytest.approx((0.5 + 1.0) / 2)
    assert m.coverage == pytest.approx(1.0)


def test_no_hits_and_short_lists() -> None:
    m = metrics_from_lists([[7]], [[1, 2]], k=3, n_items=8)
    assert (m.precision, m.recall, m.ndcg, m.map) == (0.0, 0.0, 0.0, 0.0)
    # a short list: the missing slots are misses, precision still divides by k
    m = metrics_from_lists([[1]], [[1, 2]], k=3, n_items=8)
    assert m.precision == pytest.approx(1 / 3)
    assert m.ndcg == pytest.approx(1.0 / (1 + 1 / LOG2(3)))


def test_random_ranking_matches_expectation_roughly() -> None:
    rng = np.random.default_rng(0)
    n_items, k = 50, 10
    rec = [list(rng.permutation(n_items)[:k]) for _ in range(400)]
    rel = [list(rng.choice(n_items, 5, replace=False)) for _ in range(400)]
    m = metrics_from_lists(rec, rel, k=k, n_items=n_items)
    assert m.precision == pytest.approx(5 / n_items, rel=0.15)  # E[hits]/k = 5/50
    assert m.recall == pytest.approx(k / n_items, rel=0.15)


def test_bad_k_and_table() -> None:
    with pytest.raises(ValueError):
        metrics_from_lists([[1]], [[1]], k=0, n_items=2)
    text = format_table({"als": {"precision": 0.5, "ndcg": 0.25, "users": 3}}, 10)
    assert "ndcg@10" in text and "0.2500" in text and "n/a" in text
