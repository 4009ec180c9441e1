"""Offline evaluation: train a policy on part of a log, estimate its click rate on the rest.

A target policy is turned into a distribution over the candidate actions of every logged
round (OBD: all items of the campaign at that position; our logs: the variants of the item
shown), and the estimators of :mod:`recsvc.bandit.ope` read that distribution at the logged
action. Policies that learn (``ts``, ``ts-item``, ``lints``) are trained on the first
``train_fraction`` of the rounds in time order and evaluated on the rest only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_store.base import StoredEvent
from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.linear import LinearThompsonPolicy, build_feature_map
from recsvc.bandit.logs import ObdLog
from recsvc.bandit.ope import (
    Feedback,
    action_position_means,
    estimate,
    logistic_predict,
    logistic_reward_model,
    on_policy,
)
from recsvc.bandit.thompson import ThompsonPolicy
from recsvc.bandit.variants import accumulate
from recsvc.bundle import ArtworkCatalog, Bundle
from recsvc.errors import UsageError

OBD_POLICIES = ("random", "ts-item", "ts", "lints")
RECSVC_POLICIES = ("random", "default", "ts-item", "ts", "lints")
SLOT = "slot"  # OBD: one pseudo-item whose "variants" are the campaign's items


@dataclass
class Report:
    """What ``recsvc bandit evaluate`` prints."""

    source: str
    policy: str
    n_rounds: int
    n_train_rounds: int
    logged: dict[str, Any]
    estimates: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "policy": self.policy,
            "n_rounds": self.n_rounds,
            "n_train_rounds": self.n_train_rounds,
            "logged": self.logged,
            "estimates": self.estimates,
            "settings": self.settings,
        }


def _split(n: int, policy: str, train_fraction: float, fixed: Sequence[str]) -> int:
    """Number of leading rounds used for training (0 for policies that do not learn)."""
    if policy in fixed:
        return 0
    if not 0.0 < train_fraction < 1.0:
        raise UsageError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    return int(n * train_fraction)


def _train(
    policy: Any,
    contexts: Sequence[ArtworkContext],
    items: Sequence[str],
    variants: Sequence[str],
    clicks: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Replay logged impressions and clicks through ``policy.updates_for`` into counters."""
    counters: dict[str, dict[str, float]] = {}
    linear = isinstance(policy, LinearThompsonPolicy)
    for i, (ctx, item, variant) in enumerate(zip(contexts, items, variants, strict=True)):
        if linear and i % 500 == 0:
            policy.refresh(counters)  # residuals use a recent posterior mean, as online
        impression = StoredEvent(f"t{i}", ctx.user_id, item, "impression", i, "", variant)
        accumulate(policy.updates_for(ctx, impression), counters)
        if clicks[i] > 0:
            click = StoredEvent(f"c{i}", ctx.user_id, item, "click", i, "", variant)
            accumulate(policy.updates_for(ctx, click), counters)
    if linear:
        policy.refresh(counters)
    return counters


def _feedback(
    reward: np.ndarray,
    pscore: np.ndarray,
    dist: np.ndarray,
    logged: np.ndarray,
    q: np.ndarray | None,
) -> Feedback:
    rows = np.arange(len(reward))
    target = dist[rows, logged]
    if q is None:
        return Feedback(reward, pscore, target)
    return Feedback(reward, pscore, target, q[rows, logged], (dist * q).sum(axis=1))


def _report(
    source: str,
    policy: str,
    fb: Feedback,
    n_train: int,
    n_bootstrap: int,
    seed: int,
    settings: dict[str, Any],
) -> Report:
    logged = on_policy(fb.reward, n_bootstrap=n_bootstrap, seed=seed).as_dict()
    ests = [e.as_dict() for e in estimate(fb, n_bootstrap=n_bootstrap, seed=seed)]
    return Report(source, policy, len(fb.reward), n_train, logged, ests, settings)


# -- Open Bandit Dataset -------------------------------------------------------------------------
def _obd_contexts(frame: pd.DataFrame, columns: Sequence[str]) -> list[ArtworkContext]:
    values = frame[list(columns)].astype(str).to_numpy()
    return [ArtworkContext("", features=dict(zip(columns, row, strict=True))) for row in values]


def obd_policy(
    name: str,
    log: ObdLog,
    train: pd.DataFrame,
    *,
    seed: int = 0,
    n_samples: int = 1000,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """An OBD target policy: items are the variants of one pseudo-item, one theme per item."""
    items = np.array([str(a) for a in range(log.n_actions)])
    catalog = ArtworkCatalog(
        np.array([0, log.n_actions], dtype=np.int64), items, {"theme": items.copy()}
    )
    index = {SLOT: 0}
    cols = log.user_features
    extra = dict(params or {})
    if name in ("ts", "ts-item"):
        buckets = extra.pop("bucket_features", cols[:1] if name == "ts" else ())
        # A target evaluated offline logs nothing: it needs no positivity share (and with
        # 34-80 OBD actions a share would be spread too thin to matter anyway).
        extra.setdefault("explore_share", 0.0)
        extra.setdefault("refresh_ms", 0.0)  # offline: read the counters on every call
        return ThompsonPolicy(
            catalog, index, bucket_features=buckets, n_samples=n_samples, seed=seed, **extra
        )
    if name == "lints":
        fmap = build_feature_map(
            None,
            {},
            {c: train[c].to_numpy() for c in cols},
            taste_dims=0,
            context_features=cols,
            max_values=int(extra.pop("max_values", 6)),
        )
        # Clicks are rare (~0.5%): noise ≈ sqrt(p(1-p)); ridge in pseudo-rounds per item.
        extra = {"noise": 0.07, "ridge": 20.0, **extra}
        return LinearThompsonPolicy(
            catalog,
            index,
            fmap,
            item_effects=False,
            n_samples=n_samples,
            refresh_ms=1e12,
            seed=seed,
            **extra,
        )
    raise UsageError(f"unknown OBD policy '{name}'; known: {', '.join(OBD_POLICIES)}")


def obd_distribution(
    policy: Any,
    contexts: Sequence[ArtworkContext],
    counters: Mapping[str, Any],
    n_actions: int,
    explore: bool,
) -> np.ndarray:
    """[n, n_actions] target probabilities, computed once per distinct context."""
    cache: dict[tuple[tuple[str, str], ...], np.ndarray] = {}
    out = np.empty((len(contexts), n_actions))
    keys = policy.counter_keys(contexts[0], [SLOT]) if contexts else []
    for i, ctx in enumerate(contexts):
        key = tuple(sorted(ctx.features.items()))
        row = cache.get(key)
        if row is None:
            sub = {k: counters.get(k, {}) for k in {*keys, *policy.counter_keys(ctx, [SLOT])}}
            if explore:
                _, probs, _ = policy.variant_probabilities(ctx, [SLOT], sub)
                row = probs[0, :n_actions]
            else:
                (decision,) = policy.choose(ctx, [SLOT], sub, explore=False)
                row = np.zeros(n_actions)
                row[int(decision.variant_id)] = 1.0
            cache[key] = row
        out[i] = row
    return out


def evaluate_obd(
    log: ObdLog,
    policy: str,
    *,
    train_fraction: float = 0.5,
    explore: bool = True,
    reward_model: str = "item_position",
    n_bootstrap: int = 1000,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> Report:
    """Estimate ``policy``'s CTR on an OBD log (see the module docstring for the split)."""
    frame = log.frame
    n_train = _split(len(frame), policy, train_fraction, ("random",))
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    actions = test["item_id"].to_numpy()
    if policy == "random":
        dist = np.full((len(test), log.n_actions), 1.0 / log.n_actions)
    else:
        target = obd_policy(policy, log, train, seed=seed, params=params)
        counters = _train(
            target,
            _obd_contexts(train, log.user_features),
            [SLOT] * len(train),
            train["item_id"].astype(str).tolist(),
            train["click"].to_numpy(),
        )
        dist = obd_distribution(
            target, _obd_contexts(test, log.user_features), counters, log.n_actions, explore
        )
    q = _obd_reward_model(log, train if n_train else test, test, reward_model)
    fb = _feedback(
        test["click"].to_numpy(float), test["propensity_score"].to_numpy(float), dist, actions, q
    )
    settings = {
        "train_fraction": train_fraction if n_train else 0.0,
        "explore": explore,
        "reward_model": reward_model,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }
    return _report(str(log.source), policy, fb, n_train, n_bootstrap, seed, settings)


def _obd_reward_model(log: ObdLog, fit: pd.DataFrame, test: pd.DataFrame, kind: str) -> np.ndarray:
    """[len(test), n_actions] q̂ at each test round's position, fitted on ``fit``."""
    if kind == "item_position":
        table = action_position_means(
            fit["item_id"].to_numpy(),
            fit["position"].to_numpy(),
            fit["click"].to_numpy(float),
            log.n_actions,
            log.n_positions,
        )
        return table[:, test["position"].to_numpy()].T
    if kind == "logistic":
        cols = log.user_features
        dummies = pd.get_dummies(pd.concat([fit[cols], test[cols]]).astype(str)).to_numpy(float)
        x_fit, x_test = dummies[: len(fit)], dummies[len(fit) :]
        coefs = logistic_reward_model(
            x_fit,
            fit["item_id"].to_numpy(),
            fit["position"].to_numpy(),
            fit["click"].to_numpy(float),
            log.n_actions,
            log.n_positions,
        )
        return logistic_predict(coefs, x_test, test["position"].to_numpy())
    raise UsageError(f"unknown reward model '{kind}'; known: item_position, logistic")


# -- our own exposure logs -----------------------------------------------------------------------
def _recsvc_contexts(frame: pd.DataFrame, bundle: Bundle | None) -> list[ArtworkContext]:
    out = []
    for user, ctx in zip(frame["user_id"], frame["context"], strict=True):
        feats: dict[str, str] = {}
        if bundle is not None and user in bundle.user_index:
            row = bundle.user_index[user]
            feats = {k: str(v[row]) for k, v in bundle.user_features.items()}
        feats.update({str(k): str(v) for k, v in dict(ctx).items()})
        out.append(ArtworkContext(str(user), region=feats.get("region", ""), features=feats))
    return out


def _variant_sets(frame: pd.DataFrame, bundle: Bundle | None) -> dict[str, list[str]]:
    """Each item's variants: the bundle's catalog when given, else those seen in the log."""
    seen: dict[str, list[str]] = {}
    for item, variant in zip(frame["item_id"], frame["variant_id"], strict=True):
        vs = seen.setdefault(item, [])
        if variant not in vs:
            vs.append(variant)
    if bundle is None or bundle.artwork is None:
        return {k: sorted(v) for k, v in seen.items()}
    cat = bundle.artwork
    out = {}
    for item in seen:
        idx = bundle.item_index.get(item)
        if idx is not None:
            out[item] = [str(v) for v in cat.variant_ids[cat.indptr[idx] : cat.indptr[idx + 1]]]
        if not out.get(item):
            out[item] = sorted(seen[item])
    return out


def evaluate_recsvc(
    frame: pd.DataFrame,
    policy: str,
    bundle: Bundle | None,
    *,
    train_fraction: float = 0.5,
    explore: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> Report:
    """Estimate ``policy``'s CTR on rounds read by :func:`recsvc.bandit.logs.read_recsvc_logs`."""
    if frame.empty:
        raise UsageError("the logs hold no rounds with an artwork variant")
    n_train = _split(len(frame), policy, train_fraction, ("random", "default"))
    train, test = frame.iloc[:n_train], frame.iloc[n_train:]
    variants = _variant_sets(frame, bundle)
    vmax = max(len(v) for v in variants.values())
    test_items = test["item_id"].tolist()
    logged = np.array(
        [
            variants[i].index(v) if v in variants[i] else -1
            for i, v in zip(test_items, test["variant_id"], strict=True)
        ]
    )
    if (logged < 0).any():
        bad = test.iloc[int(np.flatnonzero(logged < 0)[0])]
        raise UsageError(
            f"request {bad.request_id}: variant {bad.variant_id!r} of item "
            f"{bad.item_id!r} is not in the artwork catalog"
        )
    k = np.array([len(variants[i]) for i in test_items])
    mask = np.arange(vmax)[None, :] < k[:, None]
    if policy == "random":
        dist = np.where(mask, 1.0 / k[:, None], 0.0)
    elif policy == "default":
        dist = np.zeros((len(test), vmax))
        dist[:, 0] = 1.0
    else:
        dist = _learned_distribution(policy, bundle, train, test, explore, seed, params or {}, vmax)
    # Reward model: smoothed mean per (item, variant) from the training rounds (or all).
    fit = train if n_train else test
    pairs = [(i, v) for i, vs in variants.items() for v in vs]
    keys = {pair: j for j, pair in enumerate(pairs)}
    fit_actions = np.array(
        [keys[(i, v)] for i, v in zip(fit["item_id"], fit["variant_id"], strict=True)]
    )
    table = action_position_means(
        fit_actions, np.zeros(len(fit), np.int64), fit["click"].to_numpy(float), len(keys), 1
    )[:, 0]
    q = np.zeros((len(test), vmax))
    for r, item in enumerate(test_items):
        for j, v in enumerate(variants[item]):
            q[r, j] = table[keys[(item, v)]]
    fb = _feedback(
        test["click"].to_numpy(float), test["propensity"].to_numpy(float), dist, logged, q
    )
    settings = {
        "train_fraction": train_fraction if n_train else 0.0,
        "explore": explore,
        "reward_model": "item_variant",
        "n_bootstrap": n_bootstrap,
        "seed": seed,
    }
    return _report("recsvc", policy, fb, n_train, n_bootstrap, seed, settings)


def _learned_distribution(
    policy: str,
    bundle: Bundle | None,
    train: pd.DataFrame,
    test: pd.DataFrame,
    explore: bool,
    seed: int,
    params: Mapping[str, Any],
    vmax: int,
) -> np.ndarray:
    from recsvc.bandit.registry import make_policy

    if bundle is None:
        raise UsageError(f"policy '{policy}' needs the bundle it serves with: pass --artifacts")
    target: Any = make_policy(policy, bundle, seed=seed, **dict(params))
    if isinstance(target, LinearThompsonPolicy):
        target.refresh_s = 1e12  # offline: the posterior changes only when we say so
    if isinstance(target, ThompsonPolicy):
        target.refresh_s = 0.0  # offline: read the counters on every call
    target.n_samples = max(target.n_samples, 1000)  # accurate target probabilities
    counters = _train(
        target,
        _recsvc_contexts(train, bundle),
        train["item_id"].tolist(),
        train["variant_id"].tolist(),
        train["click"].to_numpy(),
    )
    contexts = _recsvc_contexts(test, bundle)
    dist = np.zeros((len(test), vmax))
    for r, (ctx, item) in enumerate(zip(contexts, test["item_id"], strict=True)):
        sub = {k: counters.get(k, {}) for k in target.counter_keys(ctx, [item])}
        if explore:
            _, probs, _ = target.variant_probabilities(ctx, [item], sub)
            if probs.size:
                w = min(vmax, probs.shape[1])  # policies pad to the catalog's largest item
                dist[r, :w] = probs[0, :w]
        else:
            (decision,) = target.choose(ctx, [item], sub, explore=False)
            found = target.index.get(item)
            if found is not None:
                dist[r, found.variant_ids.index(decision.variant_id)] = 1.0
    return dist
