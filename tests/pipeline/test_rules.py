"""Each business rule of the pipeline, written once, behaves the same wherever it is used:
for one user or a batch, with the dense availability table or without it, in serving or
export. The bundle is tests/serving/bundle_factory.py's: items 0-29 are sold only in
``north``, 30-59 only in ``south``, the rest everywhere; users alternate north/south."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from feature_store.base import StoredEvent
from recsvc.bundle.scoring import default_variant
from recsvc.events import DEFAULT_EVENT_WEIGHTS
from recsvc.pipeline import ServingModel, UserInput, prepare_users, recommend
from recsvc.pipeline.features import merge_user_features
from recsvc.pipeline.filters import allowed_mask, region_allows
from recsvc.pipeline.model import build_model
from recsvc.pipeline.order import top_k
from recsvc.pipeline.regions import NO_REGION, popularity_rows, region_row
from recsvc.pipeline.retrieve import Candidates
from recsvc.pipeline.similar import similar_items
from tests.serving.bundle_factory import NORTH_ONLY, SOUTH_ONLY


def test_excluded_items_stay_out_when_seen_items_are_allowed(model: ServingModel) -> None:
    """A request that keeps seen items (experiment ``exclude_seen: false``, export's
    ``--include-seen``) and excludes items in an order that is not sorted: every excluded
    item stays out, alone and in a batch."""
    top = recommend(model, [UserInput("u000", include_seen=True)], 6)[0].item_ids
    excluded = list(reversed(top[:4]))
    users = [
        UserInput("u000", include_seen=True, exclude_item_ids=excluded),
        UserInput("u001"),
    ]
    alone = recommend(model, users[:1], 6)[0].item_ids
    together = recommend(model, users, 6)[0].item_ids
    assert not set(alone) & set(excluded)
    assert alone == together and alone[:2] == top[4:6]


def test_region_rule(model: ServingModel) -> None:
    north, south = model.region_index["north"], model.region_index["south"]
    unknown = region_row(model.region_index, "atlantis")
    assert (region_row(model.region_index, ""), unknown) == (NO_REGION, model.n_regions)
    items = np.arange(model.n_items)
    sold = {
        north: set(NORTH_ONLY) | set(range(60, model.n_items)),
        south: set(SOUTH_ONLY) | set(range(60, model.n_items)),
        unknown: set(range(60, model.n_items)),
        NO_REGION: set(range(model.n_items)),
    }
    sparse = dataclasses.replace(model, availability=None)  # rows built per call
    for region, expected in sold.items():
        for m in (model, sparse):
            assert set(np.flatnonzero(region_allows(m, np.array([region]), items))) == expected
    # Popularity: a known region's own table, else the global one (the last row).
    regions = np.array([north, south, unknown, NO_REGION])
    assert popularity_rows(regions, model.n_regions).tolist() == [north, south, 2, 2]


def test_allowed_mask_is_one_rule_for_one_user_or_many(model: ServingModel) -> None:
    clicks = [StoredEvent("e1", "u002", "i062", "click", 1)]
    users = [
        UserInput("u000"),
        UserInput("u001", region="atlantis", exclude_item_ids=["i100", "i070"]),
        UserInput("stranger"),
        UserInput("u002", recent_events=clicks, categories=["toys", "books"]),
        UserInput("u003", include_seen=True, categories=["no-such-category"]),
    ]
    rng = np.random.default_rng(1)
    items = rng.integers(-1, model.n_items, size=(len(users), 50))
    batch = prepare_users(model, users)
    every = np.arange(len(users))
    together = allowed_mask(model, batch, every, items)
    sparse = dataclasses.replace(model, availability=None)
    np.testing.assert_array_equal(allowed_mask(sparse, batch, every, items), together)
    for i, user in enumerate(users):
        alone = prepare_users(model, [user])
        mask = allowed_mask(model, alone, np.zeros(1, np.int64), items[i : i + 1])
        np.testing.assert_array_equal(mask[0], together[i])
    assert not together[items < 0].any()
    assert not together[4].any()  # a category the bundle does not have: nothing
    seen = set(model.bundle.user_items[0].indices.tolist())
    assert not any(together[0, c] for c in range(50) if items[0, c] in seen)


def test_top_k_orders_ties_by_candidate_position_whatever_the_batch() -> None:
    rng = np.random.default_rng(4)
    for _ in range(300):
        rows, width, k = int(rng.integers(1, 5)), int(rng.integers(1, 30)), int(rng.integers(1, 35))
        scores = rng.integers(0, 3, (rows, width)).astype(np.float32)
        allowed = rng.random((rows, width)) > 0.3
        items = np.arange(rows * width).reshape(rows, width)
        cands = Candidates(items, scores, np.zeros(items.shape, np.int8))
        ranked = top_k(cands, allowed, k)
        for r in range(rows):
            order = np.argsort(-np.where(allowed[r], scores[r], -np.inf), kind="stable")
            expected = items[r, order[: min(k, int(allowed[r].sum()))]]
            n = int(ranked.counts[r])
            np.testing.assert_array_equal(ranked.items[r, :n], expected)
            one = top_k(Candidates(items[r : r + 1], scores[r : r + 1], cands.sources[:1]),
                        allowed[r : r + 1], k)  # fmt: skip
            np.testing.assert_array_equal(one.items[0], ranked.items[r])


def test_user_features_merge_in_one_order() -> None:
    merged = merge_user_features(
        {"region": "south", "age": "30"},
        "north",
        {"age": "40", "plan": "gold"},
        base={"region": "west", "age": "20", "segment": "a"},
    )
    assert merged == {"region": "north", "age": "40", "segment": "a", "plan": "gold"}
    assert merge_user_features({"region": "south"}, "", {}) == {"region": "south"}


def test_default_artwork_is_the_bundle_default_variant(model: ServingModel) -> None:
    catalog = model.bundle.artwork
    assert catalog is not None
    policy = model.policy("default")
    ids = [*model.item_id_list, "not-an-item"]
    decisions = policy.choose(None, ids, {})  # type: ignore[arg-type]  # stateless
    for row in range(model.n_items):
        expected = default_variant(catalog, row) or ""
        assert policy.variants[row] == decisions[row].variant_id == expected  # type: ignore[attr-defined]
        assert decisions[row].propensity == 1.0
        assert list(model.variants_of(row))[:1] == ([expected] if expected else [])
    assert (decisions[-1].variant_id, decisions[-1].propensity) == ("", 1.0)
    bare = build_model(dataclasses.replace(model.bundle, artwork=None)).policy("default")
    assert [d.variant_id for d in bare.choose(None, ids[:3], {})] == ["", "", ""]  # type: ignore[arg-type]


def test_event_weights_come_from_the_manifest_else_the_shared_default(
    model: ServingModel,
) -> None:
    from training.data import DEFAULT_EVENT_WEIGHTS as TRAINING_DEFAULTS

    assert TRAINING_DEFAULTS is DEFAULT_EVENT_WEIGHTS  # one definition
    assert model.event_weights == dict(DEFAULT_EVENT_WEIGHTS)
    manifest = {**model.bundle.manifest, "params": {"event_weights": {"click": 5.0}}}
    trained = build_model(dataclasses.replace(model.bundle, manifest=manifest))
    assert trained.event_weights == {**DEFAULT_EVENT_WEIGHTS, "click": 5.0}


@pytest.mark.parametrize("k", [1, 5, 400])
def test_similar_items_is_the_nearest_inner_product(model: ServingModel, k: int) -> None:
    factors = model.item_factors
    for row in (0, 31, 159):
        items, scores = similar_items(model.bundle.index, factors, row, k)
        sims = factors @ factors[row]
        sims[row] = -np.inf
        expected = np.argsort(-sims, kind="stable")[: min(k, model.n_items - 1)]
        assert row not in items and len(items) == len(expected)
        np.testing.assert_allclose(scores, sims[expected], rtol=1e-5)
        assert set(items.tolist()) == set(expected.tolist())  # ties may swap places
    with pytest.raises(IndexError):
        similar_items(model.bundle.index, factors, model.n_items, 3)


def test_for_users_restricts_every_per_user_table(model: ServingModel) -> None:
    from recsvc.bundle import with_users

    bundle = model.bundle
    rows = np.array([3, 10, 11, 59])
    dense = {"user_factors": bundle.user_factors[rows]}
    csr = {"user_items": bundle.user_items[rows], "candidates": bundle.candidates[rows]}
    local = model.for_users(with_users(bundle, rows, dense, csr), rows)
    n_users = len(bundle.user_ids)
    for field in dataclasses.fields(model):
        value = getattr(model, field.name)
        if isinstance(value, np.ndarray) and value.shape[:1] == (n_users,):
            assert getattr(local, field.name).shape[:1] == (len(rows),), field.name
    users = [UserInput(str(bundle.user_ids[r])) for r in rows]
    expected = recommend(model, users, 8)
    for a, b in zip(recommend(local, users, 8), expected, strict=True):
        assert (a.item_ids, a.reasons) == (b.item_ids, b.reasons)


def test_cold_users_are_ranked_by_the_trained_cold_start_source(model: ServingModel) -> None:
    """A bundle whose training chose the ``segments`` source ranks a cold user with a known
    profile value by that segment's items (masked by region availability), labelled as the
    profile source; a cold user whose features the source does not know gets global
    popularity, labelled as such."""
    import scipy.sparse as sp

    from recsvc.bundle.format import ColdStartArrays
    from recsvc.bundle.scoring import cold_start_scores, profile_known

    n_items = model.n_items
    counts = np.zeros((2, n_items), np.float32)
    counts[0, n_items - 6 :] = 50.0  # "age=young" users took the last six items
    counts[1, :6] = 50.0
    cold = ColdStartArrays(
        source="segments",
        prior_strength=1.0,
        groupings=(("age",),),
        group_keys=np.array(["age=young", "age=old"]),
        group_counts=sp.csr_matrix(counts),
    )
    bundle = dataclasses.replace(model.bundle, cold_start=cold)
    chosen = build_model(bundle)
    young = {"age": "young"}
    assert profile_known(bundle, young) and not profile_known(bundle, {"age": "unseen"})
    (rec,) = recommend(chosen, [UserInput("new-user", attributes=young)], 5)
    assert rec.source == "profile"
    expected = cold_start_scores(bundle, young)
    allowed = region_allows(chosen, np.array([NO_REGION]), np.arange(n_items))
    order = [chosen.item_id_list[i] for i in np.argsort(-np.where(allowed, expected, -np.inf),
                                                          kind="stable")[:5]]  # fmt: skip
    assert rec.item_ids == order
    assert set(rec.item_ids) <= set(chosen.item_id_list[n_items - 6 :])
    (other,) = recommend(chosen, [UserInput("new-user-2", attributes={"age": "unseen"})], 5)
    assert other.source == "global"


def test_als_fold_in_weights_play_counts_as_training_did() -> None:
    """``log`` weighting (heavy-tailed counts) gives the confidences training's
    ``log2(1 + w)`` gave, so a fold-in of new plays lands where a retrain would."""
    from recsvc.pipeline.foldin import AlsFoldIn

    params = AlsFoldIn(
        gram=np.eye(2), regularization=0.1, alpha=2.0, weighting="log", k1=100.0, b=0.8,
        item_length_norm=np.ones(3), n_items=3,
    )  # fmt: skip
    got = params.confidences(np.array([0, 1, 2]), np.array([1.0, 3.0, 10_000.0]))
    assert np.allclose(got, 2.0 * np.log2(1.0 + np.array([1.0, 3.0, 10_000.0])))
