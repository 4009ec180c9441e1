"""Artwork page: per item, variant and region, how often each variant was shown and
clicked, the policy's current choice probabilities, and off-policy estimates of other
policies from the logged exposures (``recsvc bandit evaluate``'s estimators)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from feature_store.base import OnlineStore
from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.offline import RECSVC_POLICIES, evaluate_recsvc
from recsvc.experiments.stats import Z95
from recsvc.pipeline import ServingModel

OPE_BOOTSTRAP = 200
MAX_ITEMS_LISTED = 50


def wilson(clicks: float, shown: float, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a click rate (stays inside [0, 1] for few impressions)."""
    if shown <= 0:
        return None, None
    p = clicks / shown
    denom = 1 + z * z / shown
    centre = (p + z * z / (2 * shown)) / denom
    half = z * math.sqrt(p * (1 - p) / shown + z * z / (4 * shown * shown)) / denom
    low = centre - half
    return (low if low > 1e-12 else 0.0), min(1.0, centre + half)


def _rate_rows(frame: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    grouped = frame.groupby(keys, sort=True)["click"].agg(["count", "sum"]).reset_index()
    rows = []
    for rec in grouped.to_dict("records"):
        shown, clicks = float(rec["count"]), float(rec["sum"])
        lo, hi = wilson(clicks, shown)
        rows.append(
            {
                **{k: rec[k] for k in keys},
                "shown": int(shown),
                "clicks": int(clicks),
                "ctr": clicks / shown if shown else None,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return rows


def items(rounds: pd.DataFrame) -> list[dict[str, Any]]:
    """Items with logged artwork rounds, most shown first."""
    rows = _rate_rows(rounds, ["item_id"])
    rows.sort(key=lambda r: (-r["shown"], r["item_id"]))
    return rows[:MAX_ITEMS_LISTED]


def logged_policy(rounds: pd.DataFrame) -> str:
    """The policy that served most of the logged rounds (what the servers run)."""
    if rounds.empty:
        return ""
    counts = rounds["policy"].value_counts()
    return str(counts.index[0]) if len(counts) else ""


def choice_probabilities(
    store: OnlineStore, model: ServingModel, policy_name: str, item: str, regions: list[str]
) -> dict[str, Any]:
    """The policy's probability of choosing each variant of ``item`` now, per region, from
    the store's counters (Monte Carlo, before the exploration floor)."""
    row = model.bundle.item_index.get(item)
    variants = [str(v) for v in model.variants_of(row)] if row is not None else []
    policy = model.policy(policy_name)
    out = []
    for region in regions:
        ctx = ArtworkContext(
            user_id="", region=region, features={"region": region} if region else {}
        )
        probe = getattr(policy, "variant_probabilities", None)
        if probe is None:  # the default policy: always the first variant
            probs = [1.0 if i == 0 else 0.0 for i in range(len(variants))]
        else:
            counters = store.get_counters(policy.counter_keys(ctx, [item]))
            _, table, _ = probe(ctx, [item], counters, np.random.default_rng(0))
            probs = [float(p) for p in (table[0][: len(variants)] if len(table) else [])]
        out.append({"region": region or "(none)", "probs": probs})
    return {"variants": variants, "rows": out, "policy": policy_name}


def off_policy(
    rounds: pd.DataFrame, model: ServingModel, policies: tuple[str, ...] = RECSVC_POLICIES
) -> list[dict[str, Any]]:
    """IPS/SNIPS/DR (and replay where valid) estimates with bootstrap CIs, per policy."""
    out: list[dict[str, Any]] = []
    if rounds.empty:
        return out
    for name in policies:
        try:
            report = evaluate_recsvc(
                rounds.reset_index(drop=True), name, model.bundle, n_bootstrap=OPE_BOOTSTRAP
            )
        except Exception as exc:  # one policy's failure must not hide the others
            out.append({"policy": name, "error": str(exc), "estimates": [], "n_rounds": 0})
            continue
        out.append(
            {
                "policy": name,
                "error": "",
                "n_rounds": report.n_rounds,
                "logged": report.logged,
                "estimates": report.estimates,
            }
        )
    return out


def page(
    store: OnlineStore, rounds: pd.DataFrame, model: ServingModel | None, item: str, policy: str
) -> dict[str, Any]:
    listed = items(rounds)
    served_by = logged_policy(rounds)
    chosen_policy = policy or served_by or "default"
    result: dict[str, Any] = {
        "items": listed,
        "item": item,
        "policy": chosen_policy,
        "logged_policy": served_by,
        "policies": list(RECSVC_POLICIES),
        "rounds": len(rounds),
    }
    if not item:
        return result
    mine = rounds[rounds["item_id"] == item]
    result["by_variant"] = _rate_rows(mine, ["variant_id"])
    result["by_region"] = _rate_rows(mine, ["variant_id", "region"])
    if model is not None:
        regions = sorted(set(mine["region"])) or [""]
        if chosen_policy != "random":
            result["choice"] = choice_probabilities(store, model, chosen_policy, item, regions)
        result["ope"] = off_policy(mine, model)
    return result
