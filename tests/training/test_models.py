"""Every model fits tiny demo data, beats random, and ships in a bundle as it was fitted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsvc.bundle.scoring import cold_user_scores, cold_user_vector
from training.data import Dataset, InteractionMatrix, build_matrix
from training.errors import TrainingError
from training.evaluation import evaluate_scores, split_interactions
from training.metrics import ranking_metrics
from training.models import RecommenderBase, make_model
from training.models.als import weight_interactions
from training.models.hybrid import LightFMHybrid
from training.models.popularity import shrunk_region_popularity

from .shipped import assert_bundle_serves_the_model

FAST: dict[str, dict[str, Any]] = {
    "als": {"factors": 16, "iterations": 8, "regularization": 1.0, "alpha": 3.0},
    "bpr": {"factors": 16, "iterations": 60, "learning_rate": 0.05},
    "lightfm": {"factors": 16, "epochs": 10},
    "popularity": {},
    "region_popularity": {"prior_strength": 50.0},
    "ease": {"lambda": 50.0},
}


@pytest.fixture(scope="module")
def split(demo_dataset: Dataset) -> tuple[InteractionMatrix, sp.csr_matrix]:
    train_rows, test_rows = split_interactions(demo_dataset.interactions, "random:0.2", 3)
    train = build_matrix(demo_dataset, train_rows)
    test = build_matrix(demo_dataset, test_rows, user_ids=train.user_ids, item_ids=train.item_ids)
    return train, test.matrix


@pytest.fixture(scope="module")
def fitted(
    demo_dataset: Dataset, split: tuple[InteractionMatrix, sp.csr_matrix]
) -> dict[str, RecommenderBase]:
    train, _ = split
    return {name: make_model(name, **p).fit(train, demo_dataset) for name, p in FAST.items()}


def _random_ndcg(train: sp.csr_matrix, test: sp.csr_matrix, k: int) -> float:
    rng = np.random.default_rng(0)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    scores = rng.random((users.size, train.shape[1]))
    r, c = train[users].nonzero()
    scores[r, c] = -np.inf
    ids = np.argsort(-scores, axis=1)[:, :k]
    return ranking_metrics(ids, test[users], k).ndcg


@pytest.mark.parametrize("name", list(FAST))
def test_model_beats_random(
    name: str, fitted: dict[str, RecommenderBase], split: tuple[InteractionMatrix, sp.csr_matrix]
) -> None:
    train, test = split
    metrics = evaluate_scores(fitted[name], train.matrix, test, k=10)
    baseline = _random_ndcg(train.matrix, test, 10)
    assert metrics.users > 100
    assert metrics.ndcg > 1.5 * baseline, (name, metrics.ndcg, baseline)


@pytest.mark.parametrize("name", ["als", "bpr", "lightfm"])  # the models with factors
def test_the_bundle_serves_the_fitted_model(
    name: str,
    fitted: dict[str, RecommenderBase],
    split: tuple[InteractionMatrix, sp.csr_matrix],
    tmp_path: Path,
) -> None:
    train, _ = split
    assert_bundle_serves_the_model(fitted[name], train, tmp_path / name)


def test_recommend_filters_seen_and_orders(
    fitted: dict[str, RecommenderBase], split: tuple[InteractionMatrix, sp.csr_matrix]
) -> None:
    train, _ = split
    users = np.arange(20)
    ids, scores = fitted["als"].recommend(users, train.matrix[users], N=15)
    assert ids.shape == (20, 15) and ids.dtype == np.int64
    for u in users:
        seen = set(train.matrix[u].indices)
        assert not seen & set(ids[u].tolist())
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    unfiltered, _ = fitted["als"].recommend(users, train.matrix[users], 15, False)
    assert unfiltered.shape == (20, 15)


def test_cold_user_vector_matches_lightfm_predict(
    fitted: dict[str, RecommenderBase], demo_dataset: Dataset
) -> None:
    model = fitted["lightfm"]
    assert isinstance(model, LightFMHybrid)
    arrays = model.to_arrays(model.item_ids)
    assert demo_dataset.users is not None
    row = demo_dataset.users.iloc[0]
    features = {c: str(row[c]) for c in demo_dataset.users.columns if c != "user_id"}
    features["unknown_column"] = "x"  # ignored: not a trained feature
    # LightFM's own prediction for a new user whose row holds only these features
    names = [f"{c}={v}" for c, v in features.items()]
    vocab = {str(n): i for i, n in enumerate(model.user_feature_names)}
    cols = [vocab[n] for n in names if n in vocab]
    assert len(cols) == len(features) - 1
    user_row = sp.csr_matrix(
        (np.full(len(cols), 1.0 / len(cols), np.float32), ([0] * len(cols), cols)),
        shape=(1, len(vocab)),
    )
    items = np.arange(len(model.item_ids), dtype=np.int32)
    expected = model.lightfm.predict(
        np.zeros(items.size, np.int32),
        items,
        user_features=user_row,
        item_features=_item_features(model, demo_dataset),
    )
    got = cold_user_scores(arrays, features)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    vector, bias = cold_user_vector(arrays, {"nothing": "here"})
    assert not vector.any() and bias == 0.0


def _item_features(model: LightFMHybrid, dataset: Dataset) -> sp.csr_matrix:
    from training.models.hybrid import feature_matrix

    train_items = model.item_ids
    vocab = {str(n): i for i, n in enumerate(model.item_feature_names)}
    identity = np.array([f"item_id={i}" in vocab for i in train_items])
    return feature_matrix(train_items, dataset.items, "item_id", vocab, identity, False)


def test_new_items_get_feature_representations(
    fitted: dict[str, RecommenderBase], demo_dataset: Dataset
) -> None:
    model = fitted["lightfm"]
    assert isinstance(model, LightFMHybrid) and demo_dataset.items is not None
    items = demo_dataset.items.copy()
    new = items.iloc[[0]].assign(item_id="brand-new-item")
    frame = pd.concat([items, new], ignore_index=True)
    arrays = model.to_arrays(np.array(["brand-new-item", model.item_ids[0], "no-features"]), frame)
    assert arrays.item_representations.shape[0] == 3
    assert np.abs(arrays.item_representations[0]).sum() > 0
    assert not arrays.item_representations[2].any()
    assert all("user_id=" not in n for n in arrays.user_feature_names)


def test_weighting_and_popularity_shrinkage() -> None:
    x = sp.csr_matrix(np.array([[1, 0, 2], [0, 1, 1], [1, 1, 0], [0, 0, 1]], np.float32))
    for weighting in ("bm25", "tfidf"):
        w = weight_interactions(x, weighting)
        assert w.shape == x.shape and (w != 0).sum() == x.nnz and (w.data > 0).all()
    with pytest.raises(TrainingError, match="weighting"):
        weight_interactions(x, "sqrt")
    # log: a weight of 1 stays 1 (binary data unchanged), counts are compressed to log2(1+w)
    np.testing.assert_allclose(weight_interactions(x, "log").toarray(), np.log2(1 + x.toarray()))
    plays = sp.csr_matrix(np.array([[1, 10_000]], np.float32))
    assert weight_interactions(plays, "log").data.max() < 14
    region = np.array([0, 0, 1, -1])
    weak = shrunk_region_popularity(x, region, 2, prior_strength=1e6)
    strong = shrunk_region_popularity(x, region, 2, prior_strength=0.0)
    glob = np.bincount(x.indices, minlength=3) / x.nnz
    np.testing.assert_allclose(weak[1], glob, atol=1e-5)  # a tiny region ≈ global
    np.testing.assert_allclose(strong[1], [0.5, 0.5, 0.0])  # no prior: its own counts


def test_factory_and_ease_limit(
    split: tuple[InteractionMatrix, sp.csr_matrix], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TrainingError, match="unknown model"):
        make_model("svd")
    with pytest.raises(TrainingError, match="unknown ALS parameter"):
        make_model("als", factor=3)
    import training.models.ease as ease

    monkeypatch.setattr(ease, "MAX_ITEMS", 10)
    with pytest.raises(TrainingError, match="at most 10 items"):
        make_model("ease").fit(split[0])
