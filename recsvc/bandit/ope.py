"""Off-policy estimators of a target policy's click rate from logged bandit feedback.

Every estimator works on per-round arrays, so the same code serves the Open Bandit Dataset
and our own exposure logs:

* ``reward`` r_i, the logged click;
* ``pscore`` p_i, the logging policy's probability of the logged action (its propensity);
* ``target`` π_i, the target policy's probability of that same logged action;
* for doubly robust, ``q_logged`` = q̂(x_i, a_i) and ``q_expected`` = Σ_a π(a|x_i) q̂(x_i, a)
  from a reward model.

Estimators (Dudík et al. 2014; Swaminathan & Joachims 2015; Li et al. 2011 for replay):
``ips`` = mean(w r) with w = π/p; ``snips`` = Σ w r / Σ w; ``dr`` = mean(q_expected +
w (r - q_logged)); ``replay`` = Σ π r / Σ π, the expected-value form of rejection replay,
valid only when the logging policy is uniform (then it equals SNIPS; it is left out
otherwise). Confidence intervals
are percentile bootstrap intervals over rounds (the reward model is held fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ESTIMATORS = ("replay", "ips", "snips", "dr")


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n_rounds: int
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Feedback:
    """Per-round arrays an estimator needs (see the module docstring)."""

    reward: np.ndarray
    pscore: np.ndarray
    target: np.ndarray
    q_logged: np.ndarray | None = None
    q_expected: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.reward)
        for name in ("pscore", "target", "q_logged", "q_expected"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} rounds, reward has {n}")
        if n and float(np.min(self.pscore)) <= 0.0:
            raise ValueError("pscore must be > 0 for every round (a logged action had p = 0)")


def _ratio_sums(fb: Feedback, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-round numerator and denominator terms: estimate = Σ num / Σ den."""
    w = fb.target / fb.pscore
    if estimator == "ips":
        return w * fb.reward, np.ones_like(w)
    if estimator == "snips":
        return w * fb.reward, w
    if estimator == "replay":
        return fb.target * fb.reward, fb.target
    if estimator == "dr":
        if fb.q_logged is None or fb.q_expected is None:
            raise ValueError("the dr estimator needs q_logged and q_expected (a reward model)")
        return fb.q_expected + w * (fb.reward - fb.q_logged), np.ones_like(w)
    raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")


def _bootstrap(
    num: np.ndarray, den: np.ndarray, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """Ratio estimates over ``n_bootstrap`` resamples of the rounds (chunked: bounded memory)."""
    n = len(num)
    out = np.empty(n_bootstrap)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        idx = rng.integers(0, n, size=(b, n))
        d = den[idx].sum(axis=1)
        out[start : start + b] = np.where(d > 0, num[idx].sum(axis=1) / np.where(d > 0, d, 1), 0)
    return out


def estimate(
    fb: Feedback,
    estimators: Sequence[str] = ESTIMATORS,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[Estimate]:
    """Point estimates with percentile bootstrap (1 - alpha) CIs, one per estimator."""
    out = []
    n = len(fb.reward)
    uniform_logging = n > 0 and np.allclose(fb.pscore, fb.pscore[0])
    for name in estimators:
        if name == "dr" and fb.q_logged is None:
            continue
        if name == "replay" and not uniform_logging:
            # Replay is only unbiased for uniform-random logs: the row says so, no value.
            nan = float("nan")
            note = "logging policy not uniform: replay would be biased (see SNIPS)"
            out.append(Estimate(name, nan, nan, nan, n, note))
            continue
        num, den = _ratio_sums(fb, name)
        total = float(den.sum())
        value = float(num.sum()) / total if total > 0 else float("nan")
        rng = np.random.default_rng(seed)
        boot = _bootstrap(num, den, n_bootstrap, rng) if n and n_bootstrap > 0 else np.array([])
        lo, hi = (
            (float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2)))
            if boot.size
            else (float("nan"), float("nan"))
        )
        out.append(Estimate(name, value, lo, hi, n))
    return out


def on_policy(reward: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0) -> Estimate:
    """The logged click rate itself (the logging policy's value), with a bootstrap CI."""
    ones = np.ones(len(reward))
    fb = Feedback(np.asarray(reward, float), ones, ones)
    (est,) = estimate(fb, ("ips",), n_bootstrap=n_bootstrap, seed=seed)
    return Estimate("logged", est.value, est.ci_low, est.ci_high, est.n_rounds)


def difference_from(
    fb: Feedback,
    other_reward: np.ndarray,
    estimator: str = "ips",
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Off-policy estimate minus another log's observed click rate, with a bootstrap CI.

    The check "does IPS on policy A's logs recover what policy B's own logs show?" compares
    two noisy numbers; both logs are resampled (independently) so the interval carries both
    uncertainties. Zero inside the interval = the estimate agrees with the other log.
    """
    num, den = _ratio_sums(fb, estimator)
    other = np.asarray(other_reward, dtype=np.float64)
    rng = np.random.default_rng(seed)
    a = _bootstrap(num, den, n_bootstrap, rng)
    b = _bootstrap(other, np.ones_like(other), n_bootstrap, rng)
    diff = a - b
    value = float(num.sum() / den.sum() - other.mean())
    lo, hi = float(np.quantile(diff, alpha / 2)), float(np.quantile(diff, 1 - alpha / 2))
    return Estimate(f"{estimator}-minus-logged", value, lo, hi, len(num))


# -- reward models for doubly robust -------------------------------------------------------------
def action_position_means(
    action: np.ndarray,
    position: np.ndarray,
    reward: np.ndarray,
    n_actions: int,
    n_positions: int,
    prior_strength: float = 20.0,
) -> np.ndarray:
    """[n_actions, n_positions] smoothed mean reward per (action, position).

    Shrunk toward the position's mean (then the global mean) with ``prior_strength`` pseudo
    rounds: a cell with few rounds does not get an extreme value.
    """
    reward = np.asarray(reward, dtype=np.float64)
    glob = float(reward.mean()) if len(reward) else 0.0
    pos_n = np.bincount(position, minlength=n_positions).astype(float)
    pos_s = np.bincount(position, weights=reward, minlength=n_positions)
    pos_mean = (pos_s + prior_strength * glob) / (pos_n + prior_strength)
    cell = action * n_positions + position
    n = np.bincount(cell, minlength=n_actions * n_positions).reshape(n_actions, n_positions)
    s = np.bincount(cell, weights=reward, minlength=n_actions * n_positions).reshape(
        n_actions, n_positions
    )
    return (s + prior_strength * pos_mean[None, :]) / (n + prior_strength)


def logistic_reward_model(
    features: np.ndarray,
    action: np.ndarray,
    position: np.ndarray,
    reward: np.ndarray,
    n_actions: int,
    n_positions: int,
    c: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit P(click | context features, action, position) with L2 logistic regression.

    Returns ``(coef_context_action [n_actions, F+1], coef_position [n_positions])`` such that
    the logit is ``[1, features] @ coef_context_action[a] + coef_position[k]``: context ×
    action interactions, so the model can say which item suits which user. Needs scikit-learn.
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    n, f = features.shape
    xb = np.hstack([np.ones((n, 1)), features])
    # Block design: the context vector placed in the logged action's block, + position dummies.
    rows = np.repeat(np.arange(n), f + 1)
    cols = (action[:, None] * (f + 1) + np.arange(f + 1)[None, :]).ravel()
    x_ctx = sparse.csr_matrix((xb.ravel(), (rows, cols)), shape=(n, n_actions * (f + 1)))
    x_pos = sparse.csr_matrix((np.ones(n), (np.arange(n), position)), shape=(n, n_positions))
    x = sparse.hstack([x_ctx, x_pos]).tocsr()
    if len(np.unique(reward)) < 2:
        const = np.zeros((n_actions, f + 1))
        p = float(np.clip(reward.mean() if n else 0.0, 1e-4, 1 - 1e-4))
        const[:, 0] = np.log(p / (1 - p))
        return const, np.zeros(n_positions)
    model = LogisticRegression(C=c, max_iter=500, fit_intercept=False)
    model.fit(x, reward.astype(int))
    coef = model.coef_[0]
    return coef[: n_actions * (f + 1)].reshape(n_actions, f + 1), coef[n_actions * (f + 1) :]


def logistic_predict(
    coefs: tuple[np.ndarray, np.ndarray], features: np.ndarray, position: np.ndarray
) -> np.ndarray:
    """[n, n_actions] predicted click probabilities at each round's position."""
    ctx, pos = coefs
    xb = np.hstack([np.ones((len(features), 1)), features])
    logit = xb @ ctx.T + pos[position][:, None]
    return 1.0 / (1.0 + np.exp(-logit))
