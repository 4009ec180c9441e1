"""Statistics for experiment reports: per-user metrics, the delta method, SRM, mSPRT.

The unit of randomization is the user, so every metric is computed from per-user totals:

- *mean metrics* (conversion = share of exposed users who purchased) use Welch's t-test,
  identical to ``scipy.stats.ttest_ind(equal_var=False)``;
- *ratio metrics* (CTR = clicks / impressions summed over users) are a ratio of two
  per-user means whose variance comes from the delta method,
  ``Var(X̄/Ȳ) ≈ (σx² − 2Rσxy + R²σy²) / (n·μy²)``, tested with a z-test.

Relative lift ``T/C − 1`` gets its own delta-method interval
``Var ≈ Var(T)/C² + T²·Var(C)/C⁴``.

Always-valid p-values: the mixture sequential probability ratio test (mSPRT, Johari et
al., "Always valid inference", 2017) with a normal mixing distribution N(0, τ²) on the
absolute difference θ. With θ̂ the observed difference and V its variance at a look,
``Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²)))`` and the always-valid p-value is
the running minimum of ``1/Λ``, so an operator may look every day without inflating the
false-positive rate. The mixing standard deviation is ``τ = MIXING_RELATIVE_SD × the
control's value`` at that look (default 0.05: tuned for relative lifts around 5%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

Z95 = float(sps.norm.ppf(0.975))
MIXING_RELATIVE_SD = 0.05


@dataclass(frozen=True, slots=True)
class Estimate:
    """A per-variant value with its sampling variance and the users behind it."""

    value: float
    variance: float
    n: int

    @property
    def se(self) -> float:
        return math.sqrt(self.variance) if self.variance > 0 else 0.0

    def ci(self, z: float = Z95) -> tuple[float, float]:
        return self.value - z * self.se, self.value + z * self.se


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment vs control: absolute and relative differences with 95% CIs."""

    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    p_value: float
    z: float


def mean_estimate(values: np.ndarray) -> Estimate:
    """Mean of per-user values; variance of the mean uses ddof=1 (as scipy does)."""
    n = int(values.size)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = float(values.mean())
    var = float(values.var(ddof=1)) / n if n > 1 else math.nan
    return Estimate(mean, var, n)


def ratio_estimate(num: np.ndarray, den: np.ndarray) -> Estimate:
    """``sum(num) / sum(den)`` over users with the delta-method variance."""
    n = int(num.size)
    if n == 0 or float(den.sum()) == 0.0:
        return Estimate(math.nan, math.nan, n)
    mx, my = float(num.mean()), float(den.mean())
    ratio = mx / my
    if n < 2:
        return Estimate(ratio, math.nan, n)
    cov = np.cov(np.vstack([num, den]).astype(np.float64), ddof=1)
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * my**2)
    return Estimate(ratio, max(float(var), 0.0), n)


def welch_df(treat: Estimate, control: Estimate) -> float:
    vt, vc = treat.variance, control.variance
    denom = vt**2 / (treat.n - 1) + vc**2 / (control.n - 1)
    return (vt + vc) ** 2 / denom if denom > 0 else math.inf


def compare(treat: Estimate, control: Estimate, *, welch: bool = False) -> Comparison:
    """Difference, relative lift, CIs and two-sided p-value (z, or Welch t if asked)."""
    nan = math.nan
    if not (math.isfinite(treat.variance) and math.isfinite(control.variance)):
        return Comparison(nan, (nan, nan), nan, (nan, nan), nan, nan)
    diff = treat.value - control.value
    var = treat.variance + control.variance
    se = math.sqrt(var)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        crit = Z95
    else:
        z = diff / se
        if welch:
            df = welch_df(treat, control)
            p = float(2 * sps.t.sf(abs(z), df))
            crit = float(sps.t.ppf(0.975, df))
        else:
            p = float(2 * sps.norm.sf(abs(z)))
            crit = Z95
    abs_ci = (diff - crit * se, diff + crit * se)
    c, t = control.value, treat.value
    if c == 0:
        rel, rel_ci = nan, (nan, nan)
    else:
        rel = t / c - 1
        rel_se = math.sqrt(treat.variance / c**2 + t**2 * control.variance / c**4)
        rel_ci = (rel - crit * rel_se, rel + crit * rel_se)
    return Comparison(diff, abs_ci, rel, rel_ci, p, z)


def srm_p_value(counts: np.ndarray, shares: np.ndarray) -> float:
    """Chi-square goodness of fit of observed users per variant to the designed shares."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0 or counts.size < 2:
        return math.nan
    expected = total * np.asarray(shares, dtype=np.float64)
    keep = expected > 0
    if np.any(counts[~keep] > 0):
        return 0.0  # users in a variant designed to get none
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return float(sps.chi2.sf(stat, int(keep.sum()) - 1))


def msprt_likelihood_ratio(diff: float, variance: float, tau: float) -> float:
    """Normal-mixture mSPRT statistic Λ for one look (1.0 when undefined)."""
    if not (math.isfinite(diff) and math.isfinite(variance)) or variance <= 0 or tau <= 0:
        return 1.0
    tau2 = tau * tau
    log_lr = 0.5 * math.log(variance / (variance + tau2)) + (diff * diff * tau2) / (
        2 * variance * (variance + tau2)
    )
    return math.exp(min(log_lr, 700.0))


def always_valid_p_values(diffs: np.ndarray, variances: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Running ``min(1, 1/Λ)`` over successive looks (e.g. one per day)."""
    p = 1.0
    out = np.empty(len(diffs), dtype=np.float64)
    for i, (d, v, tau) in enumerate(zip(diffs, variances, taus, strict=True)):
        p = min(p, 1.0 / msprt_likelihood_ratio(float(d), float(v), float(tau)))
        out[i] = p
    return out


def mixing_sd(control_value: float, relative_sd: float = MIXING_RELATIVE_SD) -> float:
    return abs(control_value) * relative_sd if math.isfinite(control_value) else math.nan
