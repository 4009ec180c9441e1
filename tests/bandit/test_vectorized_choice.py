"""The vectorized choice path against per-item reference computations on seeded data.

The policies read all items of a request through per-catalog tables and one flat counter
pass, and count Monte Carlo wins with packed bits; these tests recompute the same
quantities one item at a time with plain dict reads and numpy draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.linear import LinearThompsonPolicy, build_feature_map
from recsvc.bandit.registry import make_policy
from recsvc.bandit.thompson import EXPLORE_SHARE, ThompsonPolicy
from recsvc.bandit.variants import count_max, layout, served_weights
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


@pytest.mark.parametrize("buckets", [(), ("region", "segment")])
def test_vectorized_beta_posterior_equals_the_per_item_reference(buckets: tuple[str, ...]) -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=buckets, seed=1)
    counters = _ts_counters(policy, seed=2)
    lay = layout(policy.index, ITEMS)
    assert list(lay.rows) == list(range(20))  # the unknown item has no row
    alpha, beta = policy.posterior(CTX, lay, ITEMS, counters)
    for row, pos in enumerate(lay.rows):
        ref_a, ref_b = _reference_beta(policy, counters, ITEMS[pos])
        k = len(ref_a)
        np.testing.assert_allclose(alpha[row, :k], ref_a, rtol=1e-6)
        np.testing.assert_allclose(beta[row, :k], ref_b, rtol=1e-6)
        assert np.isneginf(lay.penalty[row, k:]).all() and (lay.penalty[row, :k] == 0).all()


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


def test_vectorized_choice_probabilities_match_per_item_draws() -> None:
    policy = ThompsonPolicy(ART, INDEX, n_samples=20_032, seed=3)  # 313 words of 64 bits
    counters = _ts_counters(policy, seed=4)
    _, probs, _ = policy.variant_probabilities(CTX, ITEMS, counters)
    reference = _reference_probabilities(policy, counters, 20_000, seed=5)
    assert probs.shape == (20, policy.index.vmax)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    for row, ref in enumerate(reference):
        np.testing.assert_allclose(probs[row, : len(ref)], ref, atol=0.02)
        assert (probs[row, len(ref) :] == 0).all()  # padding never wins


def test_linear_scores_equal_the_per_item_reference() -> None:
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
    lay, m, var, d_mean, d_var = lin._scores(ctx, ITEMS, counters)
    u = fmap.vector(ctx)
    post = lin._posterior
    assert post is not None
    for row, pos in enumerate(lay.rows):
        h = counters[lin.item_key(ITEMS[pos])]
        for j, (v, theme) in enumerate(VARIANTS[ITEMS[pos]]):
            t = lin.index.themes.index(theme)
            assert lay.codes[row, j] == t
            denom = max(h[f"{v}:n"], 0.0) + lin.item_ridge
            assert d_mean[row, j] == pytest.approx(h[f"{v}:r"] / denom, rel=1e-5)
            assert d_var[row, j] == pytest.approx(lin.noise**2 / denom, rel=1e-5)
        t0 = lay.codes[row, 0]
        assert m[t0] == pytest.approx(float(post.mean[t0] @ u), rel=1e-5)
        assert var[t0] == pytest.approx(lin.noise**2 * float(u @ post.cov[t0] @ u), rel=1e-5)


def test_packed_bit_counts_equal_plain_counts_with_ties() -> None:
    rng = np.random.default_rng(9)
    samples = rng.standard_normal((4, 20, 128)).astype(np.float32)
    samples[1, :5] = samples[0, :5]  # exact ties: both variants win those draws
    samples[3, ::2] = -np.inf  # padding
    top = samples == samples.max(axis=0)
    np.testing.assert_array_equal(count_max(samples), top.sum(axis=2).T)
    np.testing.assert_array_equal(count_max(samples[:, :, :40]), top[:, :, :40].sum(axis=2).T)


@pytest.mark.parametrize(("floor", "share"), [(0.0, 0.0), (0.1, 0.0), (0.0, 0.3), (0.05, 0.3)])
def test_served_probabilities_sum_to_one_and_respect_the_floor(floor: float, share: float) -> None:
    policy = ThompsonPolicy(ART, INDEX, floor=floor, explore_share=share, seed=10)
    counters = _ts_counters(policy, seed=11)
    lay, wins, _ = policy._wins(CTX, ITEMS, counters, np.random.default_rng(12))
    w = served_weights(policy.index, lay, wins, floor, share)
    probs = w / w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    k = lay.counts
    f = np.minimum(np.maximum(floor, share / k), 1.0 / k)
    real = lay.mask
    assert (probs[real] >= np.repeat(f, k) - 1e-12).all()
    assert (probs[~real] == 0).all()
    for _ in range(200):
        for d in policy.choose(CTX, ITEMS, counters):
            if d.item_id in VARIANTS:
                kk = len(VARIANTS[d.item_id])
                assert d.propensity >= min(max(floor, share / kk), 1 / kk) - 1e-12


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
