"""Insights page: trending items by region, and the impression → click → add-to-cart →
purchase funnel per artwork variant and region. Aggregates only: no user's own history."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from recsvc.console.svg import bar_chart

WINDOWS = {"day": 86_400_000, "week": 7 * 86_400_000}
FUNNEL = ("impression", "click", "add_to_cart", "purchase")
ENGAGED = ("click", "add_to_cart", "purchase")
TOP_PER_REGION = 10
MAX_FUNNEL_ROWS = 60
UNKNOWN = "(unknown)"


def with_regions(
    events: pd.DataFrame, request_regions: Mapping[str, str], user_regions: Mapping[str, str]
) -> pd.DataFrame:
    """Each event's region: its request's (exposure context), else the user's profile one."""
    by_request = events["request_id"].map(lambda r: request_regions.get(r) or None)
    by_user = events["user_id"].map(lambda u: user_regions.get(u) or None)
    return events.assign(region=by_request.fillna(by_user).fillna(UNKNOWN))


def trending(events: pd.DataFrame, window: str, now_ms: int | None = None) -> dict[str, Any]:
    """Per region, the items with most clicks/add-to-carts/purchases in the window, with the
    count in the window before it."""
    span = WINDOWS[window]
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    engaged = events[events["type"].isin(ENGAGED)]
    recent = engaged[engaged["timestamp_ms"] >= now_ms - span]
    before = engaged[
        (engaged["timestamp_ms"] >= now_ms - 2 * span) & (engaged["timestamp_ms"] < now_ms - span)
    ]
    now_counts = recent.groupby(["region", "item_id"]).size()
    old_counts = before.groupby(["region", "item_id"]).size()
    regions: dict[str, list[dict[str, Any]]] = {}
    for key, count in now_counts.sort_values(ascending=False, kind="stable").items():
        region, item = (str(k) for k in key)  # type: ignore[attr-defined]
        rows = regions.setdefault(str(region), [])
        if len(rows) < TOP_PER_REGION:
            prev = int(old_counts.get((region, item), 0))
            rows.append(
                {
                    "item_id": item,
                    "events": int(count),
                    "previous": prev,
                    "growth": (count - prev) / prev if prev else None,
                }
            )
    return {"window": window, "regions": dict(sorted(regions.items()))}


def funnel(events: pd.DataFrame) -> dict[str, Any]:
    """Counts per (variant, region) of each funnel step. Add-to-carts and purchases rarely
    name a variant: they take the variant of the user's last earlier impression or click of
    the same item."""
    if events.empty:
        return {
            "rows": [],
            "totals": dict.fromkeys(FUNNEL, 0),
            "chart": bar_chart("funnel", [], []),
        }
    frame = events[events["type"].isin(FUNNEL)].sort_values("timestamp_ms", kind="stable")
    variant = frame["variant_id"].where(frame["variant_id"] != "")
    frame = frame.assign(variant=variant.groupby([frame["user_id"], frame["item_id"]]).ffill())
    frame = frame.dropna(subset=["variant"])
    counts = frame.groupby(["variant", "region", "type"]).size().unstack("type", fill_value=0)
    for step in FUNNEL:
        if step not in counts:
            counts[step] = 0
    counts = counts.sort_values("impression", ascending=False, kind="stable")
    rows = []
    for key, rec in counts.head(MAX_FUNNEL_ROWS).iterrows():
        variant_id, region = (str(k) for k in key)  # type: ignore[attr-defined]
        imp = int(rec["impression"])
        rows.append(
            {
                "variant_id": variant_id,
                "region": region,
                **{step: int(rec[step]) for step in FUNNEL},
                "ctr": int(rec["click"]) / imp if imp else None,
                "purchase_rate": int(rec["purchase"]) / imp if imp else None,
            }
        )
    totals = {step: int(counts[step].sum()) for step in FUNNEL}
    chart = bar_chart("funnel, all variants", list(FUNNEL), [float(totals[s]) for s in FUNNEL])
    return {"rows": rows, "totals": totals, "chart": chart}
