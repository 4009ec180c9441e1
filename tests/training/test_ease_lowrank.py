"""Low-rank EASE: an embedding model equal to EASE at full rank, and the pipeline's choice
between it and ALS on validation folds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsvc.bundle import load_bundle, publish, write_bundle
from recsvc.pipeline.foldin import linear_fold_in
from tests.fixtures.bundle import TINY_TRAIN_CONFIG
from training.data import InteractionMatrix, build_matrix, load_dataset
from training.errors import TrainingError
from training.models import make_model
from training.models.ease import MAX_ITEMS, EASELowRankModel, _randomized_svd
from training.pipeline import build_bundle

from .shipped import assert_bundle_serves_the_model


def _random_matrix(users: int, items: int, density: float, seed: int) -> InteractionMatrix:
    rng = np.random.default_rng(seed)
    # Popularity skew so item-item structure is not pure noise.
    p = np.minimum(1.0, density * 3 * rng.power(0.3, items))[None, :]
    dense = (rng.random((users, items)) < p).astype(np.float32) * rng.integers(1, 4, (1, items))
    matrix = sp.csr_matrix(dense)
    return InteractionMatrix(
        np.array([f"u{i}" for i in range(users)]), np.array([f"i{j}" for j in range(items)]), matrix
    )


def test_full_rank_reproduces_ease() -> None:
    train = _random_matrix(80, 50, 0.15, seed=1)
    ease = make_model("ease", **{"lambda": 20.0}).fit(train)
    lowrank = make_model("ease-lowrank", **{"lambda": 20.0, "user_weight": 0.0, "rank": 50})
    lowrank.fit(train)
    users = np.arange(80)
    full = ease.score_users(users, train.matrix)
    approx = lowrank.score_users(users, train.matrix)
    np.testing.assert_allclose(approx, full, atol=1e-4)
    ids_a, _ = ease.recommend(users, train.matrix, 5)
    ids_b, _ = lowrank.recommend(users, train.matrix, 5)
    assert (ids_a == ids_b).mean() > 0.98  # only float ties may swap
    # The shipped embeddings give the same scores: user vector = binary row @ P.
    assert lowrank.user_factors is not None and lowrank.item_factors is not None
    np.testing.assert_allclose(lowrank.user_factors @ lowrank.item_factors.T, approx, atol=1e-4)


def test_randomized_svd_finds_the_top_singular_values() -> None:
    rng = np.random.default_rng(3)
    q1, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    q2, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    s = 1.0 / np.arange(1, 201) ** 1.5
    a = (q1 * s) @ q2.T
    _, found, _ = _randomized_svd(a, 20, power_iterations=3, seed=0)
    np.testing.assert_allclose(found, s[:20], rtol=1e-3)


def test_the_bundle_serves_the_lowrank_model(tmp_path: Path) -> None:
    train = _random_matrix(60, 40, 0.2, seed=2)
    model = make_model("ease-lowrank", rank=8).fit(train)
    assert isinstance(model, EASELowRankModel) and model.params["rank"] == 8
    assert_bundle_serves_the_model(model, train, tmp_path / "m")


def test_refuses_large_catalogs() -> None:
    items = MAX_ITEMS + 1
    matrix = sp.csr_matrix(([1.0, 1.0], ([0, 1], [0, items - 1])), shape=(2, items))
    train = InteractionMatrix(np.array(["a", "b"]), np.arange(items).astype(str), matrix)
    with pytest.raises(TrainingError, match="at most"):
        make_model("ease-lowrank").fit(train)


def test_linear_fold_in_equals_refit_vector() -> None:
    train = _random_matrix(30, 40, 0.2, seed=4)
    model = make_model("ease-lowrank", rank=12).fit(train)
    assert isinstance(model, EASELowRankModel)
    assert model.projection is not None and model.user_factors is not None
    seen = train.matrix[0].indices.astype(np.int64)
    new = np.setdiff1d(np.arange(40), seen)[:2]
    events = np.concatenate([new, seen[:1], new[:1]])  # a seen item and a repeat add nothing
    folded = linear_fold_in(
        model.projection, model.user_factors[0], seen, events, np.full(events.size, 2.0)
    )
    x = np.zeros(40, np.float32)
    x[np.concatenate([seen, new])] = 1.0
    np.testing.assert_allclose(folded, x @ model.projection, atol=1e-4)


@pytest.mark.slow  # one ALS search trial (256 factors, 3 folds) + 3 lowrank fits
def test_pipeline_picks_on_validation_and_records_it(demo_data_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(demo_data_dir)
    matrix = build_matrix(dataset)
    config = TINY_TRAIN_CONFIG.model_copy(
        update={
            "tune": True,  # the choice is part of the search (one ALS trial in this budget)
            "tune_budget_s": 0.01,
            "lowrank_ease": True,
            "lowrank_ease_params": {"rank": 16},
            "hybrid": False,
        }
    )
    built = build_bundle(dataset, matrix, config)
    model = built.manifest["model"]
    selection = model["selection"]
    als, ease = selection["als"]["mean"], selection["ease-lowrank"]["mean"]
    assert len(selection["als"]["folds"]) == len(selection["ease-lowrank"]["folds"]) >= 1
    if ease > als:  # ease-lowrank, or its blend with ALS when that beats it on validation
        blend = selection["ease-als"]
        qualified = blend["params"]["w_ease"] < 1.0
        exponent = blend["params"]["popularity_exponent"]
        assert selection["winner"] == ("ease-als" if qualified else "ease-lowrank")
        shipped_alone = dict(selection["ease-lowrank"]["params"])
        if not qualified and exponent != 0.0:  # ease-lowrank alone, calibrated
            assert shipped_alone.pop("popularity_exponent") == exponent
            assert selection["ease-lowrank"]["folds"] == blend["folds"]
        else:
            assert blend["trials"][0]["folds"] == selection["ease-lowrank"]["folds"]
        assert blend["params"]["ease_params"] == shipped_alone
    else:
        assert selection["winner"] == "als" and "ease-als" not in selection
    assert model["name"] == selection["winner"]
    assert built.manifest["metrics"]["model_selection"]["winner"] == selection["winner"]
    if model["name"] != "als":
        assert model["fold_in"]["method"] == "linear" and built.user_projection is not None
    else:
        assert built.user_projection is None

    # Written and loaded like the other arrays, whichever model won.
    forced = replace(built, user_projection=np.ones((len(built.item_ids), 16), np.float32))
    if built.item_factors.shape[1] != 16:
        forced = replace(forced, user_projection=None)
    publish(tmp_path, lambda tmp, v: write_bundle(tmp, replace(forced, version=v)))
    loaded = load_bundle(tmp_path)
    if forced.user_projection is None:
        assert loaded.user_projection is None
    else:
        np.testing.assert_array_equal(loaded.user_projection, forced.user_projection)

    for update in ({"lowrank_ease": False}, {"tune": False}):
        off = build_bundle(dataset, matrix, config.model_copy(update=update))
        assert off.manifest["model"]["name"] == "als", update
        assert off.manifest["model"]["selection"] is None, update


def test_shipped_lowrank_bundle_serves_with_linear_fold_in(
    demo_data_dir: Path, tmp_path: Path
) -> None:
    from feature_store.base import StoredEvent
    from recsvc.pipeline.model import build_model
    from recsvc.pipeline.users import UserInput, prepare_users
    from training.pipeline import train

    config = TINY_TRAIN_CONFIG.model_copy(
        update={"model": "ease-lowrank", "lowrank_ease_params": {"rank": 24}, "hybrid": False}
    )
    train(demo_data_dir, tmp_path, config, verbose=False)
    bundle = load_bundle(tmp_path)
    assert bundle.manifest["model"]["name"] == "ease-lowrank"
    assert bundle.manifest["model"]["fold_in"]["method"] == "linear"
    p = bundle.user_projection
    assert p is not None and p.shape == (len(bundle.item_ids), 24)
    seen_binary = (bundle.user_items > 0).astype(np.float32)
    np.testing.assert_allclose(bundle.user_factors, seen_binary @ p, atol=1e-3)

    serving = build_model(bundle)
    user = str(bundle.user_ids[3])
    seen = bundle.user_items[3].indices
    new = np.setdiff1d(np.arange(len(bundle.item_ids)), seen)[:3]
    events = [
        StoredEvent(f"e{j}", user, str(bundle.item_ids[j]), "click", 1_000 + int(j)) for j in new
    ]
    batch = prepare_users(serving, [UserInput(user, recent_events=events), UserInput(user)])
    x = seen_binary[3].toarray().ravel()
    x[new] = 1.0
    np.testing.assert_allclose(batch.vectors[0], x @ p, atol=1e-3)
    np.testing.assert_allclose(batch.vectors[1], bundle.user_factors[3], atol=1e-6)
    assert batch.folded[0] and not batch.folded[1]
