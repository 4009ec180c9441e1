"""ease-lowrank with dropout-emphasis regularization (EDLAE): the closed form against a
direct solve, both solvers, truncation, persistence, fold-in and the validation grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsvc.pipeline.foldin import linear_fold_in
from training.data import InteractionMatrix
from training.errors import TrainingError
from training.models import make_model
from training.models.ease import LOWRANK_DEFAULTS, EASELowRankModel
from training.tuning import pick_winner, tune_lowrank, validation_folds

from .shipped import assert_bundle_serves_the_model


def _matrix(users: int, items: int, seed: int) -> InteractionMatrix:
    rng = np.random.default_rng(seed)
    p = np.minimum(1.0, 0.6 * rng.power(0.3, items))[None, :]  # skewed popularity
    dense = (rng.random((users, items)) < p).astype(np.float32) * rng.integers(1, 4, (1, items))
    return InteractionMatrix(
        np.array([f"u{i}" for i in range(users)]),
        np.array([f"i{j}" for j in range(items)]),
        sp.csr_matrix(dense),
    )


def _direct_scores(
    train: InteractionMatrix, lam: float, dropout: float, user_weight: float = 0.0
) -> np.ndarray:
    """x_u B with B from a plain dense solve of the EDLAE closed form (Steck 2020), the
    Gram matrix weighting user u by (mean activity / activity_u) ** user_weight."""
    x = (train.matrix.toarray() > 0).astype(np.float64)
    n_u = x.sum(axis=1)
    active = n_u > 0  # users without items weigh nothing either way
    w = np.ones_like(n_u)
    w[active] = (n_u[active].mean() / n_u[active]) ** user_weight
    g = x.T @ (w[:, None] * x)
    reg = lam + dropout / (1.0 - dropout) * np.diag(g)
    p = np.linalg.solve(g + np.diag(reg), np.eye(g.shape[0]))
    b = np.eye(g.shape[0]) - p / np.diag(p)[None, :]
    assert np.allclose(np.diag(b), 0.0)
    return np.asarray(x @ b)


@pytest.mark.parametrize(("users", "items"), [(30, 70), (90, 40)])  # Woodbury / dense
@pytest.mark.parametrize(("dropout", "user_weight"), [(0.0, 0.0), (0.3, 0.0), (0.2, 0.7)])
def test_closed_form_matches_a_direct_solve(
    users: int, items: int, dropout: float, user_weight: float
) -> None:
    train = _matrix(users, items, seed=users + items)
    params = {"lambda": 3.0, "dropout": dropout, "user_weight": user_weight, "rank": items}
    model = make_model("ease-lowrank", **params).fit(train)
    got = model.score_users(np.arange(users), train.matrix)
    want = _direct_scores(train, 3.0, dropout, user_weight)
    unseen = train.matrix.toarray() == 0  # seen items are always filtered out
    np.testing.assert_allclose(got[unseen], want[unseen], atol=1e-4)
    assert isinstance(model, EASELowRankModel)
    assert model.projection is not None
    assert model.projection.shape[1] == min(users, items)  # Woodbury: rank <= users


def test_dropout_zero_ranks_like_ease() -> None:
    train = _matrix(40, 90, seed=5)
    ease = make_model("ease", **{"lambda": 10.0}).fit(train)
    params = {"lambda": 10.0, "dropout": 0.0, "user_weight": 0.0, "rank": 90}
    lowrank = make_model("ease-lowrank", **params)
    lowrank.fit(train)
    users = np.arange(40)
    a, _ = ease.recommend(users, train.matrix, 10)
    b, _ = lowrank.recommend(users, train.matrix, 10)
    assert (a == b).mean() > 0.98  # only float ties may swap


def test_dropout_changes_the_model() -> None:
    train = _matrix(30, 60, seed=6)
    plain = make_model("ease-lowrank", **{"lambda": 5.0, "dropout": 0.0}).fit(train)
    emphasized = make_model("ease-lowrank", **{"lambda": 5.0, "dropout": 0.5}).fit(train)
    users = np.arange(30)
    assert not np.allclose(
        plain.score_users(users, train.matrix), emphasized.score_users(users, train.matrix)
    )


def test_truncation_is_a_prefix_of_the_exact_svd() -> None:
    train = _matrix(40, 100, seed=7)
    full = make_model("ease-lowrank", rank=40).fit(train)
    assert isinstance(full, EASELowRankModel)
    cut = full.truncated(12)
    direct = make_model("ease-lowrank", rank=12).fit(train)
    users = np.arange(40)
    np.testing.assert_allclose(
        cut.score_users(users, train.matrix), direct.score_users(users, train.matrix), atol=1e-4
    )
    assert cut.params["rank"] == 12 and cut.item_factors is not None
    assert cut.item_factors.shape == (100, 12)


def test_refuses_bad_parameters() -> None:
    train = _matrix(10, 20, seed=8)
    for params in ({"dropout": 1.0}, {"dropout": -0.1}, {"lambda": 0.0}, {"user_weight": -1}):
        with pytest.raises(TrainingError, match="dropout"):
            make_model("ease-lowrank", **params).fit(train)


def test_the_bundle_serves_edlae(tmp_path: Path) -> None:
    train = _matrix(25, 60, seed=9)
    model = make_model("ease-lowrank", **{"lambda": 4.0, "dropout": 0.25, "rank": 16})
    assert isinstance(model.fit(train), EASELowRankModel)
    assert_bundle_serves_the_model(model, train, tmp_path / "m")


def test_fold_in_of_a_new_interaction_equals_recomputation() -> None:
    train = _matrix(20, 50, seed=10)
    params = {"lambda": 2.0, "dropout": 0.2, "user_weight": 0.5, "rank": 20}
    model = make_model("ease-lowrank", **params).fit(train)
    assert isinstance(model, EASELowRankModel)
    assert model.projection is not None and model.user_factors is not None
    assert model.item_factors is not None
    seen = train.matrix[3].indices.astype(np.int64)
    new = int(np.setdiff1d(np.arange(50), seen)[0])
    folded = linear_fold_in(
        model.projection, model.user_factors[3], seen, np.array([new]), np.array([1.0])
    )
    updated = train.matrix.tolil()
    updated[3, new] = 1.0
    refit_rows = sp.csr_matrix(updated)[3]
    recomputed = model.score_users(np.array([3]), refit_rows)
    np.testing.assert_allclose(folded @ model.item_factors.T, recomputed[0], atol=1e-4)


def test_validation_grid_records_every_trial_and_the_choice() -> None:
    train = _matrix(60, 80, seed=11)
    splits = validation_folds(train, 3, seed=1)
    summary = tune_lowrank(None, train, splits, seed=1, k=5)
    trials = summary["trials"]
    first = trials[0]["params"]
    # Plain EASE at the default lambda and full rank first; then the lambda line search.
    assert first == {
        "lambda": LOWRANK_DEFAULTS["lambda"],
        "dropout": 0.0,
        "user_weight": 0.0,
        "rank": 80,
    }
    assert all(len(t["folds"]) == 3 for t in trials)
    assert summary["ease"]["lambda"] in {t["params"]["lambda"] for t in trials}
    chosen = [t for t in trials if t["params"] == summary["best_params"]]
    assert chosen and summary["best_folds"] == chosen[0]["folds"]
    assert summary["best_value"] == chosen[0]["ndcg@5"]
    assert "validation" in summary["reason"] and summary["validation"]["folds"] == 3
    # Fixed settings are not searched.
    fixed = tune_lowrank(None, train, splits, seed=1, k=5, fixed={"rank": 8, "dropout": 0.1})
    assert {t["params"]["rank"] for t in fixed["trials"]} == {8}
    assert {t["params"]["dropout"] for t in fixed["trials"]} == {0.1}
    assert fixed["best_params"]["rank"] == 8


def test_validation_grid_keeps_the_defaults_within_the_noise() -> None:
    trials = [
        {"params": {"rank": 1}, "m": 0.30, "folds": [0.30, 0.30, 0.30]},
        {"params": {"rank": 2}, "m": 0.31, "folds": [0.33, 0.28, 0.32]},  # noisy gain
        {"params": {"rank": 3}, "m": 0.32, "folds": [0.32, 0.32, 0.32]},  # clear gain
    ]
    assert pick_winner(trials[:2], "m")["params"] == {"rank": 1}
    assert pick_winner(trials, "m")["params"] == {"rank": 3}


@pytest.mark.slow  # one ALS search trial and one ease-lowrank setting on 3 folds
def test_manifest_records_the_validation_choice(demo_data_dir: Path) -> None:
    from tests.fixtures.bundle import TINY_TRAIN_CONFIG
    from training.data import build_matrix, load_dataset
    from training.pipeline import build_bundle

    dataset = load_dataset(demo_data_dir)
    config = TINY_TRAIN_CONFIG.model_copy(
        update={
            "tune": True,
            "tune_budget_s": 0.01,  # the defaults only: one ALS trial, one lowrank setting
            "lowrank_ease": True,
            "lowrank_ease_params": {"rank": 16},
            "hybrid": False,
        }
    )
    manifest = build_bundle(dataset, build_matrix(dataset), config).manifest
    selection = manifest["model"]["selection"]
    lowrank = selection["ease-lowrank"]
    chosen = {key: lowrank["params"][key] for key in ("lambda", "dropout", "user_weight")}
    assert lowrank["trials"] and {t["params"]["rank"] for t in lowrank["trials"]} == {16}
    best = pick_winner(lowrank["trials"], "ndcg@10")
    assert {**best["params"], "rank": 16} == {**chosen, "rank": lowrank["params"]["rank"]}
    assert lowrank["folds"] == best["folds"] and "validation" in lowrank["choice"]
    assert manifest["metrics"]["model_selection"]["ease-lowrank"]["params"] == lowrank["params"]
    if manifest["model"]["name"] == "ease-lowrank":
        assert manifest["model"]["params"]["lambda"] == chosen["lambda"]
        assert manifest["model"]["params"]["user_weight"] == chosen["user_weight"]
        assert manifest["model"]["selected_by"] == "validation"
