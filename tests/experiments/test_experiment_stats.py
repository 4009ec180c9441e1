"""The statistics agree with scipy and with the textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from recsvc.experiments import stats


def test_welch_matches_scipy_ttest() -> None:
    rng = np.random.default_rng(3)
    a = rng.binomial(1, 0.11, size=700).astype(float)
    b = rng.binomial(1, 0.14, size=900).astype(float)
    ours = stats.compare(stats.mean_estimate(b), stats.mean_estimate(a), welch=True)
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.z == pytest.approx(ref.statistic, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert ours.abs_ci[0] == pytest.approx(ci.low, rel=1e-9)
    assert ours.abs_ci[1] == pytest.approx(ci.high, rel=1e-9)


def test_ratio_with_one_impression_per_user_is_the_two_proportion_z_test() -> None:
    rng = np.random.default_rng(5)
    ca, cb = rng.binomial(1, 0.2, 4000).astype(float), rng.binomial(1, 0.22, 5000).astype(float)
    ones_a, ones_b = np.ones_like(ca), np.ones_like(cb)
    ours = stats.compare(stats.ratio_estimate(cb, ones_b), stats.ratio_estimate(ca, ones_a))
    # Unpooled two-proportion z-test written out with scipy's normal.
    pa, pb = ca.mean(), cb.mean()
    se = math.sqrt(pa * (1 - pa) / (len(ca) - 1) + pb * (1 - pb) / (len(cb) - 1))
    z = (pb - pa) / se
    assert ours.z == pytest.approx(z, rel=1e-9)
    assert ours.p_value == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-9)


def test_delta_method_variance_matches_the_formula_and_a_bootstrap() -> None:
    rng = np.random.default_rng(11)
    imps = rng.poisson(6, size=3000).astype(float) + 1
    clicks = rng.binomial(imps.astype(int), 0.1).astype(float)
    est = stats.ratio_estimate(clicks, imps)
    n, mx, my = len(imps), clicks.mean(), imps.mean()
    r = mx / my
    sx, sy = clicks.var(ddof=1), imps.var(ddof=1)
    sxy = np.cov(clicks, imps, ddof=1)[0, 1]
    assert est.value == pytest.approx(clicks.sum() / imps.sum())
    assert est.variance == pytest.approx((sx - 2 * r * sxy + r * r * sy) / (n * my * my))
    boot = []
    for _ in range(400):
        idx = rng.integers(0, n, n)
        boot.append(clicks[idx].sum() / imps[idx].sum())
    assert est.se == pytest.approx(float(np.std(boot)), rel=0.15)


def test_relative_lift_interval_is_the_delta_method() -> None:
    t, c = stats.Estimate(0.12, 1e-5, 1000), stats.Estimate(0.10, 2e-5, 1000)
    cmp = stats.compare(t, c)
    assert cmp.rel_lift == pytest.approx(0.2)
    se = math.sqrt(1e-5 / 0.01 + 0.0144 * 2e-5 / 1e-4)
    assert cmp.rel_ci[0] == pytest.approx(0.2 - sps.norm.ppf(0.975) * se)
    assert cmp.rel_ci[1] == pytest.approx(0.2 + sps.norm.ppf(0.975) * se)


@pytest.mark.parametrize(
    ("counts", "shares"),
    [([5200, 4800], [0.5, 0.5]), ([310, 290, 400], [0.3, 0.3, 0.4]), ([12, 30], [0.25, 0.75])],
)
def test_srm_matches_scipy_chisquare(counts: list[int], shares: list[float]) -> None:
    expected = np.asarray(shares) * sum(counts)
    ref = sps.chisquare(counts, expected).pvalue
    assert stats.srm_p_value(np.asarray(counts), np.asarray(shares)) == pytest.approx(ref)


def test_srm_fires_on_52_48_and_not_on_50_50() -> None:
    assert stats.srm_p_value(np.array([5200, 4800]), np.array([0.5, 0.5])) < 0.001
    assert stats.srm_p_value(np.array([5000, 5000]), np.array([0.5, 0.5])) == pytest.approx(1.0)


def test_msprt_statistic_and_running_minimum() -> None:
    diff, var, tau = 0.01, 1e-5, 0.005
    expected = math.sqrt(var / (var + tau**2)) * math.exp(
        diff**2 * tau**2 / (2 * var * (var + tau**2))
    )
    assert stats.msprt_likelihood_ratio(diff, var, tau) == pytest.approx(expected)
    p = stats.always_valid_p_values(
        np.array([0.0, 0.02, 0.0]), np.array([1e-4, 1e-5, 1e-5]), np.array([tau] * 3)
    )
    assert p[0] == 1.0 and p[1] < 0.05 and p[2] == p[1]  # never goes back up
    # Undefined looks (no data yet) leave the p-value at 1.
    assert (
        stats.always_valid_p_values(np.array([math.nan]), np.array([math.nan]), np.array([tau]))[0]
        == 1.0
    )
