"""ease-als: ease-lowrank blended with a linear ALS read-out as one linear embedding model;
its validation choice in ``train``, and serving it through FAISS with exact fold-in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import scipy.sparse as sp

from recsvc.bundle import load_bundle
from recsvc.serving.server import ServerThread
from recsvc.settings import ServingSettings
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.fixtures.bundle import TINY_TRAIN_CONFIG
from training.data import InteractionMatrix
from training.errors import TrainingError
from training.evaluation import evaluate_scores
from training.models import make_model
from training.models.base import top_n
from training.models.blend import EASEALSBlendModel
from training.models.ease import EASELowRankModel
from training.models.linear import LinearEmbeddingModel
from training.tuning import pick_qualified, tune_blend, validation_folds

from .shipped import assert_bundle_serves_the_model

PARTS = {
    "ease_params": {"lambda": 10.0, "rank": 30},
    "als_params": {"factors": 8, "iterations": 5, "num_threads": 1, "regularization": 2.0},
}


def _matrix(users: int = 90, items: int = 60, seed: int = 4) -> InteractionMatrix:
    rng = np.random.default_rng(seed)
    p = np.minimum(1.0, 0.4 * rng.power(0.3, items))[None, :]
    dense = (rng.random((users, items)) < p).astype(np.float32) * rng.integers(1, 4, (1, items))
    return InteractionMatrix(
        np.array([f"u{i}" for i in range(users)]),
        np.array([f"i{j}" for j in range(items)]),
        sp.csr_matrix(dense),
    )


def _mean_top10(scores: np.ndarray, seen: sp.csr_matrix) -> float:
    masked = scores.astype(np.float32)
    r, c = seen.nonzero()
    masked[r, c] = -np.inf
    _, top = top_n(masked, 10)
    return float(top.mean())


def test_blend_is_the_weighted_sum_of_normalized_part_scores() -> None:
    train = _matrix()
    blend = EASEALSBlendModel(**PARTS, w_ease=0.6, random_state=3)
    ease, als = blend.fit_parts(train)
    x = (train.matrix > 0).astype(np.float32).tocsr()
    blend.combine(ease, als, x)
    users = np.arange(train.matrix.shape[0])
    s_ease = ease.score_users(users, train.matrix).astype(np.float64)
    y = np.asarray(als.item_factors, dtype=np.float64)
    ridge = y.T @ y + 2.0 * np.eye(y.shape[1])  # linear_reg_scale 1 x ALS regularization
    s_als = np.asarray(x @ y) @ np.linalg.solve(ridge, y.T)
    expected = 0.6 * s_ease / _mean_top10(s_ease, x) + 0.4 * s_als / _mean_top10(s_als, x)
    got = blend.score_users(users, train.matrix)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
    # Shipped as embeddings: user vector = binary seen row @ projection, for known users too.
    assert blend.user_factors is not None and blend.item_factors is not None
    assert blend.projection is not None and blend.projection.shape == (60, 30 + 8)
    np.testing.assert_allclose(blend.user_factors, x @ blend.projection, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blend.user_factors @ blend.item_factors.T, got, atol=1e-4)
    # w = 1 ranks exactly as ease-lowrank alone; w = 0.6 does not.
    alone = EASEALSBlendModel(**PARTS, w_ease=1.0).combine(ease, als, x)
    ids, _ = alone.recommend(users, train.matrix, 5)
    ref, _ = ease.recommend(users, train.matrix, 5)
    assert (ids == ref).mean() > 0.98
    mixed, _ = blend.recommend(users, train.matrix, 5)
    assert (mixed != ref).any()


def test_the_bundle_serves_the_blend_and_bad_params(tmp_path: Path) -> None:
    train = _matrix()
    model = make_model("ease-als", **PARTS, w_ease=0.5).fit(train)
    assert_bundle_serves_the_model(model, train, tmp_path / "m")
    with pytest.raises(TrainingError, match="unknown ease-als parameter"):
        EASEALSBlendModel(w=0.5)
    with pytest.raises(TrainingError, match="w_ease"):
        EASEALSBlendModel(**PARTS, w_ease=1.5).fit(train)


def test_pick_qualified_needs_a_gain_beyond_the_noise_and_ignores_order() -> None:
    def t(w: float, folds: list[float]) -> dict[str, object]:
        return {"params": {"w_ease": w}, "m": float(np.mean(folds)), "folds": folds}

    base = t(1.0, [0.20, 0.21, 0.22])
    noisy = t(0.8, [0.23, 0.19, 0.22])  # higher mean (+0.0033), one fold worse: not clear
    small = t(0.7, [0.201, 0.212, 0.221])  # +0.0013 on every fold: qualifies
    large = t(0.5, [0.203, 0.214, 0.223])  # +0.0033 on every fold: qualifies, best
    assert pick_qualified([base, noisy], "m") is base
    assert pick_qualified([base, noisy, small], "m") is small
    assert pick_qualified([base, large, small, noisy], "m") is large
    assert pick_qualified([base, small, noisy, large], "m") is large


def test_tune_blend_scores_the_incumbent_as_ease_lowrank_alone() -> None:
    train = _matrix(120, 70, seed=9)
    splits = validation_folds(train, 2, seed=5)
    found = tune_blend(
        None,
        splits,
        PARTS["ease_params"],
        PARTS["als_params"],
        seed=5,
        weights=(0.5, 0.3),
        exponents=(0.0, -0.3),
    )
    trials = found["trials"]
    assert [(t["params"]["w_ease"], t["params"]["popularity_exponent"]) for t in trials] == [
        (1.0, 0.0),
        (1.0, -0.3),
        (0.5, 0.0),
        (0.5, -0.3),
        (0.3, 0.0),
        (0.3, -0.3),
    ]
    # w_ease 1 is ease-lowrank alone, uncalibrated (the incumbent) and calibrated: what
    # train ships when that trial wins
    for trial, exponent in zip(trials[:2], (0.0, -0.3), strict=True):
        alone = []
        for fit, held in splits:
            ease = make_model(
                "ease-lowrank",
                **PARTS["ease_params"],
                popularity_exponent=exponent,
                random_state=5,
            ).fit(fit)
            alone.append(round(evaluate_scores(ease, fit.matrix, held, 10, 20_000, 5).ndcg, 5))
        np.testing.assert_allclose(trial["folds"], alone, atol=2e-5)
    assert trials[1]["folds"] != trials[0]["folds"]
    picked = pick_qualified(trials, "ndcg@10")["params"]
    assert {k: found["best_params"][k] for k in picked} == picked
    assert found["best_params"]["als_params"] == PARTS["als_params"]


def test_popularity_calibration_scales_item_scores_and_keeps_the_fold_in() -> None:
    train = _matrix()
    x = (train.matrix > 0).astype(np.float32).tocsr()
    scale = (np.asarray(x.sum(axis=0)).ravel() + 1.0) ** -0.25
    users = np.arange(train.matrix.shape[0])
    for name, params in (("ease-lowrank", PARTS["ease_params"]), ("ease-als", PARTS)):
        plain = make_model(name, **params, random_state=3).fit(train)
        calibrated = make_model(name, **params, popularity_exponent=-0.25, random_state=3)
        calibrated.fit(train)
        got = calibrated.score_users(users, train.matrix)
        expected = plain.score_users(users, train.matrix) * scale[None, :]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert isinstance(calibrated, LinearEmbeddingModel)
        assert isinstance(plain, LinearEmbeddingModel)
        assert calibrated.projection is not None and plain.projection is not None
        assert calibrated.user_factors is not None
        np.testing.assert_allclose(calibrated.projection, plain.projection, atol=1e-6)
        np.testing.assert_allclose(calibrated.user_factors, x @ calibrated.projection, atol=1e-4)
        ids, _ = calibrated.recommend(users, train.matrix, 5)
        ref, _ = plain.recommend(users, train.matrix, 5)
        assert (ids != ref).any()  # popular items moved down
        with pytest.raises(TrainingError, match="popularity_exponent"):
            make_model(name, **params, popularity_exponent=2.0).fit(train)
    # a rank cut of a calibrated ease-lowrank is the best rank-r approximation of its scores
    full = make_model("ease-lowrank", **PARTS["ease_params"], popularity_exponent=-0.25)
    full.fit(train)
    assert isinstance(full, EASELowRankModel)
    assert full.projection is not None and full.item_factors is not None
    cut = full.truncated(5).score_users(users, train.matrix)
    u, s, vt = np.linalg.svd(full.projection @ full.item_factors.T)
    best = np.asarray(x @ ((u[:, :5] * s[:5]) @ vt[:5]))
    np.testing.assert_allclose(cut, best, rtol=1e-3, atol=1e-3)


@pytest.fixture
def blend_server(demo_data_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    from training.pipeline import train

    config = TINY_TRAIN_CONFIG.model_copy(
        update={"model": "ease-als", "lowrank_ease_params": {"rank": 24}, "hybrid": False}
    )
    root = tmp_path / "bundles"
    train(demo_data_dir, root, config, verbose=False)
    # Field(default, ...) reads as required to mypy without the pydantic plugin
    settings = ServingSettings(
        artifacts=root, host="127.0.0.1", port=0,
        feature_store=f"sqlite:///{tmp_path / 'store.sqlite'}",
        watch_interval_s=0.1, exposure_flush_s=0.05, grace_s=1.0,
    )  # fmt: skip
    server = ServerThread(settings).start()
    yield server, root
    server.stop()


@pytest.mark.slow  # trains a tiny bundle and serves it
def test_trained_blend_serves_and_folds_in_exactly(
    blend_server: tuple[ServerThread, Path],
) -> None:
    server, root = blend_server
    bundle = load_bundle(root)
    model = bundle.manifest["model"]
    assert model["name"] == "ease-als" and model["fold_in"]["method"] == "linear"
    p, items = bundle.user_projection, bundle.item_factors
    assert p is not None and p.shape == (len(bundle.item_ids), 24 + 16)
    seen_binary = (bundle.user_items > 0).astype(np.float32).tocsr()
    # Known users' vectors in the bundle are the fold-in of their whole history.
    np.testing.assert_allclose(bundle.user_factors, seen_binary @ p, rtol=1e-4, atol=1e-4)

    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.RecommenderStub(channel)
    try:
        row = 3
        user = str(bundle.user_ids[row])
        before = stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
        shown = [i.item_id for i in before.items]
        x = seen_binary[row].toarray().ravel()
        # Click the three items the model ranks lowest among the unseen: the ranking must move.
        scores = (x @ p) @ items.T
        unseen = np.flatnonzero(x == 0)
        clicked = unseen[np.argsort(scores[unseen])[:3]]
        events = [
            pb.Event(event_id=f"b-{j}", user_id=user, item_id=str(bundle.item_ids[j]),
                     type=pb.EVENT_TYPE_CLICK, timestamp_ms=int(time.time() * 1000))
            for j in clicked
        ]  # fmt: skip
        assert stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10).accepted == 3
        after = stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
    finally:
        channel.close()
    x_new = x.copy()
    x_new[clicked] = 1.0
    expected = (x_new @ p) @ items.T  # what ease-als scores after the clicks, exactly
    got = [i.item_id for i in after.items]
    assert got != shown
    assert not {str(bundle.item_ids[j]) for j in clicked} & set(got)
    index = bundle.item_index
    served = np.array([i.score for i in after.items])
    np.testing.assert_allclose(served, expected[[index[i] for i in got]], rtol=1e-3, atol=1e-4)
    assert (np.diff(served) <= 1e-6).all()


@pytest.mark.slow  # one ALS search trial, one ease-lowrank setting and the blend on 3 folds
def test_train_replaces_ease_lowrank_by_the_blend_only_on_validation(demo_data_dir: Path) -> None:
    from training.data import build_matrix, load_dataset
    from training.pipeline import build_bundle

    dataset = load_dataset(demo_data_dir)
    config = TINY_TRAIN_CONFIG.model_copy(
        update={
            "tune": True,
            "tune_budget_s": 0.01,  # the defaults only
            "factors": 4,  # a weak ALS, so ease-lowrank wins and the blend is scored
            "lowrank_ease_params": {"rank": 16},
            "hybrid": False,
        }
    )
    built = build_bundle(dataset, build_matrix(dataset), config)
    model = built.manifest["model"]
    selection = model["selection"]
    assert selection["ease-lowrank"]["mean"] > selection["als"]["mean"]
    blend = selection["ease-als"]
    trials = blend["trials"]
    assert trials[0]["params"] == {"w_ease": 1.0, "popularity_exponent": 0.0}
    assert trials[0]["folds"] == selection["ease-lowrank"]["folds"]  # same fit, same folds
    picked = pick_qualified(trials, "ndcg@10")
    assert blend["params"]["w_ease"] == picked["params"]["w_ease"]
    assert blend["params"]["popularity_exponent"] == picked["params"]["popularity_exponent"]
    assert blend["params"]["als_params"]["factors"] == 4
    assert selection["winner"] == ("ease-als" if picked is not trials[0] else "ease-lowrank")
    assert model["name"] == selection["winner"] == "ease-als"  # on this data it qualifies
    assert model["params"]["w_ease"] == blend["params"]["w_ease"] < 1.0
    assert model["fold_in"]["method"] == "linear" and "blend with als" in model["reason"]
    assert built.user_projection is not None and built.user_projection.shape == (
        len(built.item_ids),
        16 + 4,
    )


@pytest.mark.slow  # one ALS search trial and one ease-lowrank setting on 3 folds
def test_train_ships_calibrated_ease_lowrank_when_that_trial_wins(
    demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blend trial at w_ease 1 with a popularity exponent is ease-lowrank alone,
    calibrated: train ships ease-lowrank (no ALS part) with that exponent and says why."""
    import training.tuning
    from training.data import build_matrix, load_dataset
    from training.pipeline import build_bundle

    real = training.tuning.tune_blend

    def calibration_wins(*args: object, **kwargs: object) -> dict[str, object]:
        kwargs.update(weights=(), exponents=(-0.3,))
        found = real(*args, **kwargs)  # type: ignore[arg-type]
        calibrated = found["trials"][1]
        assert calibrated["params"] == {"w_ease": 1.0, "popularity_exponent": -0.3}
        found["best_params"] = {**found["best_params"], **calibrated["params"]}
        found["best_folds"], found["best_value"] = calibrated["folds"], calibrated["ndcg@10"]
        found["reason"] = "calibrated: forced by the test"
        return found

    monkeypatch.setattr(training.tuning, "tune_blend", calibration_wins)
    dataset = load_dataset(demo_data_dir)
    matrix = build_matrix(dataset)
    config = TINY_TRAIN_CONFIG.model_copy(
        update={
            "tune": True,
            "tune_budget_s": 0.01,
            "factors": 4,  # a weak ALS, so ease-lowrank wins and the calibration is scored
            "lowrank_ease_params": {"rank": 16},
            "hybrid": False,
        }
    )
    built = build_bundle(dataset, matrix, config)
    model = built.manifest["model"]
    selection = model["selection"]
    assert selection["winner"] == model["name"] == "ease-lowrank"
    assert model["params"]["popularity_exponent"] == -0.3
    assert selection["ease-lowrank"]["folds"] == selection["ease-als"]["folds"]
    assert "popularity calibration: calibrated: forced by the test" in model["reason"]
    # the shipped items are ease-lowrank's, each scaled by (n_i + 1) ** -0.3
    plain = make_model("ease-lowrank", **{**model["params"], "popularity_exponent": 0.0})
    plain.fit(matrix)
    x = (matrix.matrix > 0).astype(np.float32).tocsr()
    scale = (np.asarray(x.sum(axis=0)).ravel() + 1.0) ** -0.3
    assert isinstance(plain, EASELowRankModel) and plain.projection is not None
    assert built.user_projection is not None and plain.item_factors is not None
    np.testing.assert_allclose(
        built.user_projection @ built.item_factors.T,
        plain.projection @ (plain.item_factors * scale[:, None]).T,
        atol=1e-4,
    )


@pytest.mark.slow  # one ALS search trial and one ease-lowrank setting on 3 folds
def test_a_configured_calibration_is_not_searched_on_top(demo_data_dir: Path) -> None:
    from training.data import build_matrix, load_dataset
    from training.pipeline import build_bundle

    dataset = load_dataset(demo_data_dir)
    config = TINY_TRAIN_CONFIG.model_copy(
        update={
            "tune": True,
            "tune_budget_s": 0.01,
            "factors": 4,  # a weak ALS, so ease-lowrank wins and the blend is scored
            "lowrank_ease_params": {"rank": 16, "popularity_exponent": -0.1},
            "hybrid": False,
        }
    )
    built = build_bundle(dataset, build_matrix(dataset), config)
    selection = built.manifest["model"]["selection"]
    trials = selection["ease-als"]["trials"]
    assert {t["params"]["popularity_exponent"] for t in trials} == {0.0}
    assert len(trials) == 7  # the weights only
    assert selection["ease-lowrank"]["params"]["popularity_exponent"] == -0.1
    assert selection["ease-als"]["params"]["ease_params"]["popularity_exponent"] == -0.1
    shipped = built.manifest["model"]["params"]
    calibrated = shipped.get("ease_params", shipped)  # ease-als or ease-lowrank alone
    assert calibrated["popularity_exponent"] == -0.1
