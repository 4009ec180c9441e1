"""The batched choice path against per-item reference computations on seeded data.

The policies write every variant of a request into flat [variant, item] lists in one pass,
draw the Monte Carlo scores of all of them in one numpy pass and count wins with packed
bits; these tests recompute the same quantities one item at a time.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.linear import LinearThompsonPolicy, build_feature_map
from recsvc.bandit.registry import make_policy
from recsvc.bandit.thompson import EXPLORE_SHARE, ThompsonPolicy
from recsvc.bandit.variants import count_max, floors, gaussian_wins, new_cells, serve
from tests.bandit.worlds import bundle, catalog

THEMES = ("comedy", "drama", "action", "romance")
RNG = np.random.default_rng(11)
VARIANTS = {
    f"i{i}": [
        (f"v{j}", THEMES[t])
        for j, t in enumerate(RNG.choice(4, size=int(RNG.integers(1, 5)), replace=False))
    ]
    for i in range(30)
}
ART, INDEX = catalog(VARIANTS)
VARIANT_NAMES = {item: [v for v, _ in variants] for item, variants in VARIANTS.items()}
CTX = ArtworkContext("u1", region="EU", features={"segment": "vip"})
ITEMS = [*[f"i{i}" for i in RNG.permutation(30)[:20]], "no-such-item"]


def _ts_counters(policy: ThompsonPolicy, seed: int) -> dict[str, dict[str, float]]:
    """Random counters on the item and bucket hashes, with some fields missing."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    bucket = policy.bucket(CTX)
    for item, variants in VARIANTS.items():
        for key in (policy.item_key(item), policy.bucket_key(item, bucket)):
            h = {}
            for v, _ in variants:
                if rng.random() < 0.8:
                    n = float(rng.integers(0, 400))
                    h[f"{v}:n"] = n
                    if rng.random() < 0.8:
                        h[f"{v}:c"] = float(rng.integers(0, int(n * 0.3) + 1))
            out[key] = h
    return out


def _reference_beta(
    policy: ThompsonPolicy, counters: dict[str, dict[str, float]], item: str
) -> tuple[list[float], list[float]]:
    """Alpha and beta of each variant of one item, read field by field (the old loop)."""
    alphas, betas = [], []
    item_h = counters.get(policy.item_key(item), {})
    bucket_h = counters.get(policy.bucket_key(item, policy.bucket(CTX)), {})
    for v, _ in VARIANTS[item]:
        c = max(item_h.get(f"{v}:c", 0.0), 0.0)
        n = max(item_h.get(f"{v}:n", 0.0), c)
        a, b = policy.prior_alpha + c, policy.prior_beta + n - c
        if policy.bucket_features:
            cb = max(bucket_h.get(f"{v}:c", 0.0), 0.0)
            nb = max(bucket_h.get(f"{v}:n", 0.0), cb)
            strength = min(policy.backoff_strength, a + b)
            mean = a / (a + b)
            a, b = strength * mean + cb, strength * (1.0 - mean) + nb - cb
        alphas.append(a)
        betas.append(b)
    return alphas, betas


def _cell(cells_mean_sd: list[float], vmax: int, n: int, i: int, j: int) -> tuple[float, float]:
    size = vmax * n
    return cells_mean_sd[j * n + i], cells_mean_sd[size + j * n + i]


@pytest.mark.parametrize("buckets", [(), ("region", "segment")])
def test_batched_beta_posterior_equals_the_per_item_reference(buckets: tuple[str, ...]) -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=buckets, refresh_ms=0, seed=1)
    counters = _ts_counters(policy, seed=2)
    ab = policy.cells(CTX, ITEMS, counters, beta=True)
    moments = policy.cells(CTX, ITEMS, counters)
    assert ab.n == 20 and ab.items[-1] is None  # the unknown item has no cells
    vmax = policy.index.vmax
    for i, item in enumerate(ITEMS[:20]):
        ref_a, ref_b = _reference_beta(policy, counters, item)
        for j in range(vmax):
            a, b = _cell(ab.mean_sd, vmax, 20, i, j)
            mean, sd = _cell(moments.mean_sd, vmax, 20, i, j)
            if j >= len(ref_a):  # padding never wins
                assert a == mean == float("-inf")
                continue
            assert (a, b) == pytest.approx((ref_a[j], ref_b[j]), rel=1e-12)
            t = ref_a[j] + ref_b[j]
            m = ref_a[j] / t
            assert (mean, sd) == pytest.approx((m, np.sqrt(m * (1 - m) / (t + 1))), rel=1e-12)


def _reference_probabilities(
    policy: ThompsonPolicy, counters: dict[str, dict[str, float]], draws: int, seed: int
) -> list[np.ndarray]:
    """Per item: the share of Gaussian (moment-matched Beta) draws each variant wins."""
    rng = np.random.default_rng(seed)
    out = []
    for item in ITEMS[:20]:
        a, b = (np.array(x) for x in _reference_beta(policy, counters, item))
        mean = a / (a + b)
        sd = np.sqrt(mean * (1 - mean) / (a + b + 1))
        samples = mean + sd * rng.standard_normal((draws, len(a)))
        out.append(np.bincount(samples.argmax(axis=1), minlength=len(a)) / draws)
    return out


def test_batched_choice_probabilities_match_per_item_draws() -> None:
    policy = ThompsonPolicy(ART, INDEX, n_samples=20_032, refresh_ms=0, seed=3)  # 313 words
    counters = _ts_counters(policy, seed=4)
    _, probs, decisions = policy.variant_probabilities(CTX, ITEMS, counters)
    reference = _reference_probabilities(policy, counters, 20_000, seed=5)
    assert probs.shape == (20, policy.index.vmax) and len(decisions) == len(ITEMS)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    for row, ref in enumerate(reference):
        np.testing.assert_allclose(probs[row, : len(ref)], ref, atol=0.02)
        assert (probs[row, len(ref) :] == 0).all()  # padding never wins


def test_linear_cells_equal_the_per_item_reference() -> None:
    factors = np.random.default_rng(6).normal(size=(8, 4))
    fmap = build_feature_map(factors, {f"u{k}": k for k in range(8)}, {}, taste_dims=2)
    lin = LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, seed=7)
    rng = np.random.default_rng(8)
    counters: dict[str, dict[str, float]] = {
        lin.item_key(item): {
            f"{v}:{f}": float(rng.normal(3.0, 2.0)) for v, _ in variants for f in "nr"
        }
        for item, variants in VARIANTS.items()
    }
    ctx = ArtworkContext("u3")
    cells, m, var = lin.cells(ctx, ITEMS, counters)
    u = fmap.vector(ctx)
    post = lin._posterior
    assert post is not None
    vmax = lin.index.vmax
    for t in range(len(lin.index.themes)):
        assert m[t] == pytest.approx(float(post.mean[t] @ u), rel=1e-5)
        assert var[t] == pytest.approx(lin.noise**2 * float(u @ post.cov[t] @ u), rel=1e-5)
    assert cells.table is not None and cells.table.shape == (2, vmax, 20)
    for i, item in enumerate(ITEMS[:20]):
        h = counters[lin.item_key(item)]
        for j, (v, theme) in enumerate(VARIANTS[item]):
            t = lin.index.themes.index(theme)
            denom = max(h[f"{v}:n"], 0.0) + lin.item_ridge
            mean, sd = cells.table[0, j, i], cells.table[1, j, i]
            assert mean == pytest.approx(m[t] + h[f"{v}:r"] / denom, rel=1e-5)
            assert sd == pytest.approx(np.sqrt(var[t] + lin.noise**2 / denom), rel=1e-5)
        assert np.isneginf(cells.table[0, len(VARIANTS[item]) :, i]).all()
    # With a refresh interval the offsets are cached: only stale items are asked for.
    cached = LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=60_000, seed=7)
    keys = cached.counter_keys(ctx, ITEMS)
    assert set(lin.counter_keys(ctx, ITEMS[:20])) <= set(keys)
    first, _, _ = cached.cells(ctx, ITEMS, {k: counters.get(k, {}) for k in keys})
    assert cached.counter_keys(ctx, ITEMS) == []  # offsets and theme posteriors are fresh
    again, _, _ = cached.cells(ctx, ITEMS, {})
    assert first.table is not None and again.table is not None
    np.testing.assert_array_equal(first.table, again.table)
    np.testing.assert_allclose(first.table[1], cells.table[1], rtol=1e-5)


@pytest.mark.parametrize("buckets", [(), ("region", "segment")])
def test_cached_cells_equal_fresh_cells_and_are_refreshed_after_the_interval(
    buckets: tuple[str, ...],
) -> None:
    """With a refresh interval, counter_keys asks only for items whose cached cells are
    stale, and the cached cells equal the ones computed from the counters directly."""
    import time

    fresh = ThompsonPolicy(ART, INDEX, bucket_features=buckets, refresh_ms=0, seed=1)
    cached = ThompsonPolicy(ART, INDEX, bucket_features=buckets, refresh_ms=300, seed=1)
    counters = _ts_counters(fresh, seed=15)
    keys = cached.counter_keys(CTX, ITEMS)
    assert keys == fresh.counter_keys(CTX, ITEMS[:20])  # nothing cached yet (unknown: none)
    first = cached.cells(CTX, ITEMS, {k: counters.get(k, {}) for k in keys})
    reference = fresh.cells(CTX, ITEMS, counters)
    vmax, n = reference.vmax, reference.n
    assert first.table is not None
    expected = np.array(reference.mean_sd, np.float32).reshape(2, vmax, n)
    np.testing.assert_allclose(first.table, expected, rtol=1e-6)
    assert cached.counter_keys(CTX, ITEMS) == []  # all fresh: no store read
    # The counters change; within the interval the cached cells are served ...
    changed = _ts_counters(fresh, seed=16)
    again = cached.cells(CTX, ITEMS, {})
    assert again.table is not None
    np.testing.assert_array_equal(again.table, first.table)
    # ... and once it has passed, the items are read and recomputed.
    time.sleep(0.35)
    keys = cached.counter_keys(CTX, ITEMS)
    assert len(keys) == len(fresh.counter_keys(CTX, ITEMS[:20]))
    later = cached.cells(CTX, ITEMS, {k: changed.get(k, {}) for k in keys})
    now = fresh.cells(CTX, ITEMS, changed)
    assert later.table is not None
    np.testing.assert_allclose(
        later.table, np.array(now.mean_sd, np.float32).reshape(2, vmax, n), rtol=1e-6
    )
    greedy_cached = cached.choose(CTX, ITEMS, {}, explore=False)
    assert greedy_cached == fresh.choose(CTX, ITEMS, changed, explore=False)


def test_packed_bit_counts_equal_plain_counts_with_ties() -> None:
    rng = np.random.default_rng(9)
    samples = rng.standard_normal((4, 20, 128)).astype(np.float32)
    samples[1, :5] = samples[0, :5]  # exact ties: both variants win those draws
    samples[3, ::2] = -np.inf  # padding
    top = samples == samples.max(axis=0)
    np.testing.assert_array_equal(count_max(samples), top.sum(axis=2).T)
    np.testing.assert_array_equal(count_max(samples[:, :, :40]), top[:, :, :40].sum(axis=2).T)


@pytest.mark.parametrize(("floor", "share"), [(0.0, 0.0), (0.1, 0.0), (0.0, 0.3), (0.05, 0.3)])
def test_served_draw_follows_the_logged_probabilities_and_the_floor(
    floor: float, share: float
) -> None:
    """Fixed win counts: the served frequencies match ``f + (1 - k f) wins / total``, the
    logged propensity is exactly that, it sums to 1 per item, and respects the floor."""
    ids = ["i0", "i1", "i2", "i3"]
    cells = new_cells(ThompsonPolicy(ART, INDEX).index, ids)
    k = [it.k for it in cells.found]
    vmax = cells.vmax
    raw = [[40, 24, 0, 0], [64, 0, 0, 0], [10, 10, 44, 0], [0, 30, 30, 4]]
    pairs = zip(raw, k, strict=True)
    wins = [[w if j < kk else 0 for j, w in enumerate(row[:vmax])] for row, kk in pairs]
    fk = floors(vmax, floor, share)
    expected = []
    for row, kk in zip(wins, k, strict=True):
        f = min(max(floor, share / kk), 1 / kk) if (floor or share) else 0.0
        total = sum(row)
        expected.append([f + (1 - kk * f) * w / total for w in row[:kk]])
    for probs in expected:
        assert sum(probs) == pytest.approx(1.0)
    prng = np.random.default_rng(14)
    n = 20_000
    seen = [dict.fromkeys(range(kk), 0) for kk in k]
    for _ in range(n):
        u = prng.random(len(ids)).tolist()
        for r, d in enumerate(serve(cells, ids, wins, u, fk)):
            j = VARIANT_NAMES[ids[r]].index(d.variant_id)
            assert d.propensity == pytest.approx(expected[r][j], rel=1e-12)
            assert d.propensity >= fk[k[r]] - 1e-12
            seen[r][j] += 1
    for r, kk in enumerate(k):
        for j in range(kk):
            assert seen[r][j] / n == pytest.approx(expected[r][j], abs=0.012), (r, j)


@pytest.mark.parametrize("name", ["ts", "ts-item"])
def test_default_ts_keeps_every_variant_in_the_logs_support(name: str) -> None:
    """Positivity: even when one variant wins every draw, a served variant of an item with
    two or more variants is logged with propensity < 1 (the default explore_share)."""
    b = bundle(ART, INDEX, np.zeros((2, 2)), {"segment": np.array(["vip", "x"])})
    policy = make_policy(name, b, seed=13)
    assert isinstance(policy, ThompsonPolicy) and policy.explore_share == EXPLORE_SHARE
    converged = {}
    for item, variants in VARIANTS.items():
        h = {f"{v}:n": 100_000.0 for v, _ in variants}
        h[f"{variants[0][0]}:c"] = 50_000.0  # the first variant is certain to win
        converged[policy.item_key(item)] = h
    view = {k: converged.get(k, {}) for k in policy.counter_keys(CTX, ITEMS)}
    served_other = 0
    for _ in range(300):
        for d in policy.choose(CTX, ITEMS, view):
            k = len(VARIANTS.get(d.item_id, []))
            if k >= 2:
                assert d.propensity < 1.0
                assert d.propensity >= EXPLORE_SHARE / k - 1e-12
                served_other += d.variant_id != VARIANTS[d.item_id][0][0]
            elif k == 1:
                assert d.propensity == 1.0
    assert served_other > 0  # the other variants are actually served now and then


def test_cached_choice_probabilities_are_served_and_logged_exactly() -> None:
    """With a refresh interval TS draws each item's variant from choice probabilities cached
    with the row (256 draws per refresh): the served frequencies match the logged
    propensities, and those match Thompson sampling's probabilities mixed with the share."""
    cached = ThompsonPolicy(ART, INDEX, bucket_features=(), refresh_ms=60_000, seed=17)
    # seeded reference (Monte Carlo too), so the check is the same on every run
    fresh = ThompsonPolicy(ART, INDEX, bucket_features=(), refresh_ms=0, n_samples=200_032, seed=25)
    counters = _ts_counters(fresh, seed=18)
    items = ITEMS[:6]
    view = {k: counters.get(k, {}) for k in cached.counter_keys(CTX, items)}
    _, ts_probs, _ = fresh.variant_probabilities(CTX, items, counters)
    n = 6000
    seen: list[dict[str, int]] = [{} for _ in items]
    logged: list[dict[str, float]] = [{} for _ in items]
    for call in range(n):
        decisions = cached.choose(CTX, items, view if call == 0 else {})
        for r, d in enumerate(decisions):
            seen[r][d.variant_id] = seen[r].get(d.variant_id, 0) + 1
            assert logged[r].setdefault(d.variant_id, d.propensity) == d.propensity  # fixed
    for r, item in enumerate(items):
        k = len(VARIANTS[item])
        f = min(EXPLORE_SHARE / k, 1 / k)
        for j, v in enumerate(VARIANT_NAMES[item]):
            expected = f + (1 - k * f) * ts_probs[r, j]
            assert seen[r].get(v, 0) / n == pytest.approx(logged[r].get(v, expected), abs=0.02)
            assert logged[r].get(v, expected) == pytest.approx(expected, abs=0.05)


def test_gaussian_wins_equal_the_per_draw_maximum_counts() -> None:
    """The argmax + bincount win counts equal the counted maxima (no ties with sd > 0)."""
    policy = ThompsonPolicy(ART, INDEX, refresh_ms=0, seed=19)
    cells = policy.cells(CTX, ITEMS, _ts_counters(policy, seed=20))
    vmax, n = cells.vmax, cells.n
    noise = np.random.default_rng(21).standard_normal(vmax * n * 64, dtype=np.float32)
    ms = np.array(cells.mean_sd, np.float32).reshape(2, vmax, n, 1)
    samples = noise.reshape(vmax, n, 64) * ms[1] + ms[0]
    assert gaussian_wins(cells, noise) == count_max(samples).tolist()


def test_bucketed_ts_draws_per_call_from_cached_posteriors() -> None:
    """Bucketed TS caches each row's posterior but not its choice probabilities: every call
    draws its own, the served frequencies match TS's probabilities mixed with the share, and
    the logged propensity is unbiased (mean of 1{served = v} / propensity is 1 per variant
    that is served often enough to check)."""
    cached = ThompsonPolicy(ART, INDEX, refresh_ms=60_000, seed=22)
    # The reference probabilities are themselves Monte Carlo: seeded and with enough draws
    # (sd ~0.001) that the 0.02 tolerance below is the served frequencies' alone.
    fresh = ThompsonPolicy(ART, INDEX, refresh_ms=0, n_samples=200_032, seed=24)
    assert cached.bucket_features and fresh.bucket_features
    counters = _ts_counters(fresh, seed=23)
    items = ITEMS[:6]
    view = {k: counters.get(k, {}) for k in cached.counter_keys(CTX, items)}
    first = cached.cells(CTX, items, view)
    assert first.choice is None and cached.counter_keys(CTX, items) == []
    _, ts_probs, _ = fresh.variant_probabilities(CTX, items, counters)
    n = 6000
    seen: list[dict[str, int]] = [{} for _ in items]
    weight: list[dict[str, float]] = [{} for _ in items]
    for _ in range(n):
        for r, d in enumerate(cached.choose(CTX, items, {})):
            seen[r][d.variant_id] = seen[r].get(d.variant_id, 0) + 1
            weight[r][d.variant_id] = weight[r].get(d.variant_id, 0.0) + 1.0 / d.propensity
    for r, item in enumerate(items):
        k = len(VARIANTS[item])
        f = min(EXPLORE_SHARE / k, 1 / k)
        for j, v in enumerate(VARIANT_NAMES[item]):
            expected = f + (1 - k * f) * ts_probs[r, j]
            assert seen[r].get(v, 0) / n == pytest.approx(expected, abs=0.02), (item, v)
            if expected >= 0.1:  # weights <= 10: sd of the mean <= 0.04
                assert weight[r].get(v, 0.0) / n == pytest.approx(1.0, abs=0.15), (item, v)
