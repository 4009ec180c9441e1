"""Linear Thompson sampling learns a theme × taste interaction that plain TS cannot."""

from __future__ import annotations

import numpy as np
import pytest

from feature_store.base import StoredEvent
from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.linear import LinearThompsonPolicy, build_feature_map
from recsvc.bandit.registry import make_policy
from recsvc.bandit.thompson import ThompsonPolicy
from recsvc.bandit.variants import accumulate
from recsvc.bundle import Bundle
from tests.bandit.worlds import bundle, catalog

N_USERS, N_ITEMS = 200, 30
RNG = np.random.default_rng(0)
# Two kinds of users: comedy lovers (group 0) and drama lovers (group 1).
GROUP = np.arange(N_USERS) % 2
FACTORS = np.eye(2)[GROUP] + RNG.normal(0, 0.15, (N_USERS, 2))
FACTORS = np.hstack([FACTORS, RNG.normal(0, 0.3, (N_USERS, 2))])  # two dims of pure noise
SEGMENT = np.array(["fun", "serious"])[GROUP]
# Every item has a comedy and a drama variant, in random order (the id says nothing).
VARIANTS = {
    f"i{k}": [("x", "comedy"), ("y", "drama")][:: 1 if RNG.random() < 0.5 else -1]
    for k in range(N_ITEMS)
}
VARIANTS["new"] = [("p", "drama"), ("q", "comedy")]
ART, INDEX = catalog(VARIANTS)
LIKED = ("comedy", "drama")


def _theme(item: str, variant: str) -> str:
    return dict(VARIANTS[item])[variant]


def _ctx(user: int) -> ArtworkContext:
    return ArtworkContext(f"u{user}", features={"segment": str(SEGMENT[user])})


def _run(policy: object, rounds: int, seed: int = 1) -> tuple[float, dict[str, dict[str, float]]]:
    """Simulate: 5 random old items per request; CTR 0.3 on the liked theme, else 0.05."""
    rng = np.random.default_rng(seed)
    counters: dict[str, dict[str, float]] = {}
    clicks = []
    old = [i for i in VARIANTS if i != "new"]
    for _ in range(rounds):
        user = int(rng.integers(N_USERS))
        ctx = _ctx(user)
        items = list(rng.choice(old, 5, replace=False))
        view = {k: counters.get(k, {}) for k in policy.counter_keys(ctx, items)}  # type: ignore[attr-defined]
        for d in policy.choose(ctx, items, view):  # type: ignore[attr-defined]
            p = 0.3 if _theme(d.item_id, d.variant_id) == LIKED[GROUP[user]] else 0.05
            click = rng.random() < p
            clicks.append(click)
            for kind in ("impression", "click") if click else ("impression",):
                event = StoredEvent("e", ctx.user_id, d.item_id, kind, 0, "r", d.variant_id)
                accumulate(policy.updates_for(ctx, event), counters)  # type: ignore[attr-defined]
    return float(np.mean(clicks[len(clicks) // 2 :])), counters


@pytest.mark.parametrize("source", ["taste", "segment"])
def test_linear_learns_theme_by_taste_and_plain_ts_cannot(source: str) -> None:
    fmap = build_feature_map(
        FACTORS if source == "taste" else None,
        {f"u{k}": k for k in range(N_USERS)},
        {"segment": SEGMENT},
        taste_dims=2 if source == "taste" else 0,
        context_features=() if source == "taste" else ("segment",),
    )
    lin = LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, seed=2)
    ts = ThompsonPolicy(ART, INDEX, bucket_features=(), seed=2)
    lin_ctr, learned = _run(lin, 800)
    ts_ctr, _ = _run(ts, 800)
    # Oracle 0.30, random and the best context-free policy 0.175.
    assert lin_ctr > 0.25, lin_ctr
    assert ts_ctr < 0.21, ts_ctr
    # Generalizes to an item it never served: the theme decides, per user kind.
    counters = {k: learned.get(k, {}) for k in lin.counter_keys(_ctx(0), ["new"])}
    assert all(k in counters for k in lin.theme_keys)  # refresh_ms=0: always re-read
    for user in range(20):
        (d,) = lin.choose(_ctx(user), ["new"], counters, explore=False)
        assert _theme("new", d.variant_id) == LIKED[GROUP[user]]


def test_linear_propensities_sum_to_one_and_match_frequencies() -> None:
    fmap = build_feature_map(FACTORS, {f"u{k}": k for k in range(N_USERS)}, {}, taste_dims=2)
    lin = LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, n_samples=64, seed=3)
    counters: dict[str, dict[str, float]] = {}
    ctx = _ctx(0)
    for k in range(6):  # a few clicks so the posterior is not symmetric
        event = StoredEvent("e", "u0", "i1", "impression", 0, "r", "x")
        accumulate(lin.updates_for(ctx, event), counters)
        if k % 2:
            accumulate(
                lin.updates_for(ctx, StoredEvent("e", "u0", "i1", "click", 0, "", "x")), counters
            )
    view = {k: counters.get(k, {}) for k in lin.counter_keys(ctx, ["i1", "i2"])}
    lin.n_samples = 5000
    _, probs, _ = lin.variant_probabilities(ctx, ["i1", "i2"], view)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    lin.n_samples = 64
    n = 3000
    picks = [lin.choose(ctx, ["i1"], view)[0] for _ in range(n)]
    for k, v in enumerate(v for v, _ in VARIANTS["i1"]):
        chosen = [d for d in picks if d.variant_id == v]
        assert abs(len(chosen) / n - probs[0, k]) < 0.035
        if chosen:
            assert abs(float(np.mean([d.propensity for d in chosen])) - probs[0, k]) < 0.035


def test_linear_greedy_is_deterministic_and_floor_holds() -> None:
    fmap = build_feature_map(FACTORS, {f"u{k}": k for k in range(N_USERS)}, {}, taste_dims=2)
    lin = LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, floor=0.2, seed=4)
    counters: dict[str, dict[str, float]] = {}
    first = lin.choose(_ctx(3), ["i1", "i2", "missing"], counters, explore=False)
    assert all(
        lin.choose(_ctx(3), ["i1", "i2", "missing"], counters, explore=False) == first
        for _ in range(10)
    )
    assert first[2].variant_id == "" and [d.propensity for d in first] == [1.0] * 3
    for _ in range(200):
        for d in lin.choose(_ctx(3), ["i1", "i2"], counters):
            assert d.propensity >= 0.2 - 1e-12


def test_registry_builds_each_policy_from_a_bundle() -> None:
    b = bundle(ART, INDEX, FACTORS, {"segment": SEGMENT, "region": np.array(["EU"] * N_USERS)})
    for name in ("default", "ts", "ts-item", "lints"):
        policy = make_policy(name, b)
        view: dict[str, dict[str, float]] = {
            k: {} for k in policy.counter_keys(_ctx(0), ["i1", "i2"])
        }
        decisions = policy.choose(_ctx(0), ["i1", "i2"], view)
        assert [d.variant_id in ("x", "y") for d in decisions] == [True, True]
        assert all(0.0 < d.propensity <= 1.0 for d in decisions)
    lin = make_policy("lints", b, taste_dims=2, floor=0.05)
    assert isinstance(lin, LinearThompsonPolicy) and lin.floor == 0.05
    # Without item categories the taste is the bundle's principal directions: per version.
    again = make_policy("lints", bundle(ART, INDEX, FACTORS, {"segment": SEGMENT}, "test-v2"))
    assert isinstance(again, LinearThompsonPolicy) and again.prefix != lin.prefix


def _category_bundle(version: str, seed: int) -> Bundle:
    """The world's bundle as a retrain would ship it: other CF vectors (a rotation and new
    noise), the same items, categories and users."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    users = (FACTORS + rng.normal(0, 0.05, FACTORS.shape)) @ rotation
    comedy = np.array([1.0, 0.0, 0.0, 0.0]) @ rotation
    drama = np.array([0.0, 1.0, 0.0, 0.0]) @ rotation
    items = np.array([comedy if k % 2 else drama for k in range(len(INDEX))])
    cats = np.array(["comedy" if k % 2 else "drama" for k in range(len(INDEX))])
    return bundle(ART, INDEX, users, {"segment": SEGMENT}, version, items, {"category": cats})


def test_learning_survives_a_retrain_with_the_same_categories() -> None:
    """Taste as category affinities means the same thing in every retrain: the new
    bundle's policy reads the same hashes and keeps the learned per-taste choice."""
    first = make_policy("lints", _category_bundle("v1", 1), seed=3)
    assert isinstance(first, LinearThompsonPolicy)
    assert first.features.space == "cat:category=comedy,category=drama"
    ctr, counters = _run(first, 1500)
    assert ctr > 0.15  # it learned (0.05 on the wrong theme, 0.3 on the liked one)
    second = make_policy("lints", _category_bundle("v2", 2), seed=3)
    assert isinstance(second, LinearThompsonPolicy)
    assert second.prefix == first.prefix  # not keyed by bundle version
    second.refresh(counters)
    agree = 0
    for user in range(40):
        ctx = _ctx(user)
        view = {k: counters.get(k, {}) for k in second.counter_keys(ctx, ["i1", "i2", "new"])}
        for d in second.choose(ctx, ["i1", "i2", "new"], view, explore=False):
            agree += _theme(d.item_id, d.variant_id) == LIKED[GROUP[user]]
    assert agree >= 0.9 * 120, agree  # the learned choice holds after the swap


def test_known_users_use_the_shipped_vector_unknown_users_the_live_one() -> None:
    fmap = build_feature_map(FACTORS, {f"u{k}": k for k in range(N_USERS)}, {}, taste_dims=2)
    live = np.array([5.0, -5.0, 0.0, 0.0])
    known = fmap.vector(ArtworkContext("u3", user_vector=live))
    np.testing.assert_allclose(known, fmap.vector(ArtworkContext("u3")))
    cold = fmap.vector(ArtworkContext("stranger", user_vector=live))
    assert np.abs(cold[1:3]).max() > 1.0  # the live vector is used, projected
    np.testing.assert_allclose(fmap.vector(ArtworkContext("stranger"))[1:], 0.0)


def test_marginal_draws_choose_like_shared_theme_draws() -> None:
    """With distinct themes per item the policy draws each variant's marginal Gaussian; the
    choice probabilities equal those of one shared θ draw per theme (the general path)."""
    fmap = build_feature_map(FACTORS, {f"u{k}": k for k in range(N_USERS)}, {}, taste_dims=2)
    lin = LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, n_samples=20_000, noise=2.0, seed=4)
    assert lin.index.distinct_themes
    _, counters = _run(lin, 10, seed=5)  # a little, so that the posteriors stay wide
    ctx, items = _ctx(3), ["i1", "i2", "i7", "new"]
    view = {k: counters.get(k, {}) for k in lin.counter_keys(ctx, items)}
    _, marginal, _ = lin.variant_probabilities(ctx, items, view)
    lin.index.distinct_themes = False
    _, shared, _ = lin.variant_probabilities(ctx, items, view)
    np.testing.assert_allclose(marginal, shared, atol=0.02)
    assert ((marginal > 0.1) & (marginal < 0.9)).sum() >= 4  # not all certain choices


def test_impression_deltas_are_the_outer_product_for_known_and_new_users() -> None:
    """The A:i:j increments (cached per known user) are exactly the nonzero upper triangle
    of u uᵀ, on the first and the repeated impression, and for a user the bundle lacks."""
    b = bundle(ART, INDEX, FACTORS, {"segment": SEGMENT})
    lin = make_policy("lints", b)
    assert isinstance(lin, LinearThompsonPolicy)
    for ctx in (_ctx(3), _ctx(3), ArtworkContext("stranger", features={"segment": "fun"})):
        event = StoredEvent("e", ctx.user_id, "i1", "impression", 0, "r", "x")
        u = lin._vector(ctx)  # the policy's u (a known user's from the projected tastes)
        np.testing.assert_allclose(u, lin.features.vector(ctx), rtol=1e-12, atol=1e-12)
        i, j = np.triu_indices(len(u))
        want = {
            f"A:{a}:{c}": float(x)
            for a, c, x in zip(i.tolist(), j.tolist(), np.outer(u, u)[i, j].tolist(), strict=True)
            if x != 0.0
        }
        got = {d.field: d.amount for d in lin.updates_for(ctx, event) if d.field.startswith("A:")}
        assert got == want  # exactly: the same double products
        assert len(got) < len(i)  # zero one-hot slots move nothing


def test_taste_column_prefers_category_then_the_best_covering_item_column() -> None:
    from recsvc.bandit.linear import taste_column

    n = 40
    brand = np.array([f"b{i % 4}" for i in range(n)])
    sku = np.array([f"s{i}" for i in range(n)])  # one group per item: not a taste
    sparse = np.array(["x" if i < 3 else "" for i in range(n)])  # one value only
    genre = np.array([f"g{i % 2}" if i < 10 else "" for i in range(n)])
    assert taste_column({"brand": brand, "category": genre, "sku": sku}) == "category"
    assert taste_column({"brand": brand, "genre": genre, "sku": sku}) == "brand"
    assert taste_column({"sku": sku, "sparse": sparse}) is None
    assert taste_column({}) is None


def test_taste_space_survives_a_retrain_without_a_category_column() -> None:
    """A bundle whose items have a brand but no category keys its state by the brand
    groups, not by the bundle version: two versions with other factors share the space."""
    from recsvc.bandit.linear import build_feature_map

    rng = np.random.default_rng(0)
    brands = np.array([f"brand=b{i % 3}" for i in range(30)])
    spaces = set()
    for version in ("v1", "v2"):
        fmap = build_feature_map(
            rng.normal(size=(50, 8)).astype(np.float32),
            {f"u{i}": i for i in range(50)},
            {},
            item_factors=rng.normal(size=(30, 8)).astype(np.float32),
            item_categories=brands,
            version=version,
        )
        spaces.add(fmap.space)
    assert len(spaces) == 1 and next(iter(spaces)).startswith("cat:")
