"""The pipeline operators give the same answer for a user alone (serving) and in a batch
(export), whatever mix of users the batch holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.base import StoredEvent
from recsvc.pipeline import UserInput, recommend
from recsvc.serving.hotswap import load_model


@pytest.fixture(scope="module")
def model(bundle_root: Path):
    return load_model(bundle_root, "default")


def _users() -> list[UserInput]:
    clicks = [StoredEvent(f"e{j}", "u010", f"i{j:03d}", "click", 1) for j in (62, 66, 70)]
    return [
        UserInput("u000"),
        UserInput("u001", region="north"),  # context region overrides the profile's
        UserInput("stranger", region="south"),
        UserInput("stranger"),
        UserInput("stranger", region="atlantis"),
        UserInput("u010", recent_events=clicks),  # folded in: searches the index
        UserInput("new-with-events", recent_events=clicks),
        UserInput("u003", exclude_item_ids=["i003", "i007"], categories=["toys", "games"]),
        UserInput("u004", include_seen=True),
        UserInput("u005", categories=["no-such-category"]),
    ]


@pytest.mark.parametrize("k", [1, 7, 60])
def test_batch_equals_one_by_one(model, k: int) -> None:
    users = _users()
    together = recommend(model, users, k)
    alone = [recommend(model, [u], k)[0] for u in users]
    for a, b in zip(together, alone, strict=True):
        assert a.item_ids == b.item_ids, a.user_id
        assert a.reasons == b.reasons and a.source == b.source
        assert a.scores == pytest.approx(b.scores, rel=1e-5, abs=1e-6)
    assert together[-1].item_ids == []  # an unknown category leaves nothing, not an error


def test_user_regions_match_prepare_users(model) -> None:
    from recsvc.pipeline import prepare_users

    ids = [str(u) for u in model.bundle.user_ids]
    batch = prepare_users(model, [UserInput(u) for u in ids], cold_vectors=False)
    assert model.user_regions.tolist() == batch.regions.tolist()


def test_score_rows_bounded_gather_equals_one_product(model, monkeypatch) -> None:
    import numpy as np

    from recsvc.pipeline import retrieve

    rng = np.random.default_rng(3)
    items = rng.integers(0, model.n_items, size=(9, 13))
    items[2, 5:] = -1  # padding rows still score (callers mask them)
    vectors = rng.standard_normal((9, model.item_factors.shape[1])).astype(np.float32)
    # A budget of one row of candidates per gather: nine gathers instead of one.
    monkeypatch.setattr(retrieve, "_GATHER_FLOATS", 13 * model.item_factors.shape[1])
    chunked = retrieve.score_rows(model.item_factors, items, vectors)
    whole = np.einsum("bcd,bd->bc", model.item_factors[np.maximum(items, 0)], vectors)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 20, 40])
def test_listed_fast_path_equals_general_path(model, k: int) -> None:
    """A known user alone takes ``listed_top_k`` (first k allowed of the stored list);
    in a batch the same user goes through retrieve + allowed_mask + top_k. At k=40 (the
    whole 40-item list) the filters leave fewer than k: the general path fills."""
    from recsvc.pipeline.order import listed_top_k
    from recsvc.pipeline.users import prepare_users

    assert model.candidates_sorted and model.stored_scores_live
    ids = [str(u) for u in model.bundle.user_ids]
    users = [UserInput(u) for u in ids]
    regions = ["north", "south", "atlantis"]
    users += [UserInput(u, region=regions[i % 3]) for i, u in enumerate(ids)]
    users += [UserInput(u, exclude_item_ids=["i001", "i002", "i010"]) for u in ids[:10]]
    users += [UserInput(u, categories=["toys"]) for u in ids[:10]]
    together = recommend(model, users, k)
    fast = 0
    for user, expected in zip(users, together, strict=True):
        fast += listed_top_k(model, prepare_users(model, [user]), k) is not None
        alone = recommend(model, [user], k)[0]
        assert alone.item_ids == expected.item_ids, user
        assert alone.scores == expected.scores and alone.reasons == expected.reasons
        assert alone.source == expected.source
    assert fast > len(ids) if k < 40 else fast == 0


@pytest.mark.parametrize("k", [3, 60])
def test_region_only_users_share_one_answer_per_region(model, k: int) -> None:
    """Users known by region alone get the per-(region, k) cached answer, equal to the
    batch path's, and the cached arrays cannot be changed by a caller."""
    from recsvc.pipeline import rank_users

    users = [UserInput(f"visitor-{i}", region=r) for i, r in
             enumerate(["north", "south", "atlantis", "", "north", "south"])]  # fmt: skip
    users.append(UserInput("visitor-x", region="north", exclude_item_ids=["no-such-item"]))
    together = recommend(model, users, k)
    for user, expected in zip(users, together, strict=True):
        for _ in range(2):  # computed, then from the cache
            alone = recommend(model, [user], k)[0]
            assert (alone.item_ids, alone.reasons, alone.source) == (
                expected.item_ids, expected.reasons, expected.source)  # fmt: skip
            assert alone.scores == pytest.approx(expected.scores, rel=1e-6)
    assert len(model.cold_ranked) >= 3
    _, ranked, _ = rank_users(model, [users[0]], k)
    with pytest.raises(ValueError):
        ranked.items[0, 0] = -1
    first = together[0].item_ids[0]
    excluding = UserInput("visitor-y", region="north", exclude_item_ids=[first])
    excluded = recommend(model, [excluding], k)[0]
    assert first not in excluded.item_ids  # exclusions bypass the cache
