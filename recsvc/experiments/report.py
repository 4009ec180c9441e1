"""``recsvc experiments report``: who was assigned, what they did, which variant wins.

Inputs are the store's two logs (``read_log``):

- the *exposure log*, one row per served request (``request_id, user_id, timestamp_ms,
  item_ids, experiment, variant, …``). A row belongs to experiment NAME when its
  ``experiment`` is NAME, or, for a request in several experiments, when the comma-separated
  ``experiment`` list holds NAME (``variant`` is the matching comma-separated list), or when
  its ``context`` maps ``experiment.NAME`` to the variant.
- the *event log* (``event_id, user_id, item_id, type, timestamp_ms, request_id``).

Definitions (the unit is the user, who is sticky to one variant):

- assigned users: users with at least one exposure row (a request routed to the variant);
- exposed users: assigned users who were served at least one item; the first such row is
  the user's first exposure;
- an event counts for the experiment when its ``request_id`` is one of the experiment's
  requests, or, failing that, when its user is exposed and it happened at or after the
  user's first exposure (purchases found through search, say). Duplicate event ids count
  once;
- impressions are impression events; if the storefront sent none for the whole experiment,
  served items stand in for them (``impressions_source: "served"``);
- CTR = clicks / impressions over exposed users (ratio metric, delta method); conversion =
  share of exposed users with a purchase (Welch t-test); clicks and purchases per exposed
  user are reported alongside.

Lifts are against the first variant (control). The daily series is cumulative to the end
of each UTC day; its always-valid p-values (mSPRT) may be looked at every day.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.base import OnlineStore
from recsvc.errors import UsageError
from recsvc.experiments import stats
from recsvc.experiments.assignment import variant_shares
from recsvc.experiments.definition import HOLDOUT_VARIANT, Experiment, parse_experiment

DAY_MS = 86_400_000
SRM_ALPHA = 0.001
NAMESPACE = "experiments"
IMPRESSION, CLICK, PURCHASE = 0, 1, 2
_EVENT_INDEX = {"impression": IMPRESSION, "click": CLICK, "purchase": PURCHASE}
EXPOSURE_COLUMNS = ["request_id", "user_id", "timestamp_ms", "n_items", "variant"]
EVENT_COLUMNS = ["event_id", "user_id", "type", "timestamp_ms", "request_id"]


# -- collecting the logs ---------------------------------------------------------------------


def variant_in_row(row: Mapping[str, Any], name: str) -> str | None:
    """The variant of experiment ``name`` this exposure row was served, if any."""
    experiment = row.get("experiment") or ""
    if experiment == name:
        return str(row.get("variant") or "")
    if "," in experiment:
        names = [s.strip() for s in experiment.split(",")]
        variants = [s.strip() for s in str(row.get("variant") or "").split(",")]
        if name in names and len(variants) == len(names):
            return variants[names.index(name)]
    context = row.get("context")
    if isinstance(context, Mapping):
        value = context.get(f"experiment.{name}")
        if value:
            return str(value)
    return None


def exposure_frame(rows: Iterable[Mapping[str, Any]], name: str) -> pd.DataFrame:
    """The experiment's exposure rows as a frame with :data:`EXPOSURE_COLUMNS`."""
    kept: list[tuple[str, str, int, int, str]] = []
    for row in rows:
        variant = variant_in_row(row, name)
        if variant is None:
            continue
        items = row.get("item_ids")
        if isinstance(items, str):  # tolerate a JSON-encoded list
            items = json.loads(items) if items.startswith("[") else items.split(",")
        kept.append(
            (
                str(row.get("request_id") or ""),
                str(row["user_id"]),
                int(row["timestamp_ms"]),
                len(items or ()),
                variant,
            )
        )
    return pd.DataFrame(kept, columns=EXPOSURE_COLUMNS)


def event_frame(
    rows: Iterable[Mapping[str, Any]], users: set[str], requests: set[str]
) -> pd.DataFrame:
    """Impression/click/purchase events of the experiment's users or requests."""
    kept = [
        (
            str(r.get("event_id") or ""),
            str(r["user_id"]),
            str(r["type"]),
            int(r["timestamp_ms"]),
            str(r.get("request_id") or ""),
        )
        for r in rows
        if r.get("type") in _EVENT_INDEX
        and (r.get("user_id") in users or (r.get("request_id") or "") in requests)
    ]
    return pd.DataFrame(kept, columns=EVENT_COLUMNS)


@dataclass
class ExperimentData:
    """Per-user, per-day counts of one experiment: what the statistics work on."""

    variants: list[str]  # declared variants, then holdout if seen
    user_variant: np.ndarray  # [U] index into variants
    first_exposed_day: np.ndarray  # [U] day of first exposure, -1 if never exposed
    counts: np.ndarray  # [3, U, D] impressions, clicks, purchases per day (not cumulative)
    day0_ms: int  # start of day 0 (UTC midnight)
    impressions_source: str = "events"
    switched_users: int = 0
    unknown_variant_users: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def days(self) -> int:
        return int(self.counts.shape[2])

    def day_label(self, day: int) -> str:
        when = datetime.fromtimestamp((self.day0_ms + day * DAY_MS) / 1000, UTC)
        return when.date().isoformat()


def collect(
    experiment: Experiment, exposures: pd.DataFrame, events: pd.DataFrame
) -> ExperimentData:
    """Join exposures and events into :class:`ExperimentData` (vectorized)."""
    variants = [v.name for v in experiment.variants]
    notes: list[str] = []
    exposures = exposures.sort_values("timestamp_ms", kind="stable")
    if exposures.empty:
        empty = np.zeros((3, 0, 1), dtype=np.float64)
        none = np.zeros(0, dtype=np.int64)
        return ExperimentData(variants, none, none, empty, 0, notes=["no exposures logged yet"])
    per_user = exposures.groupby("user_id", sort=True)
    first_variant = per_user["variant"].first()
    switched = int((per_user["variant"].nunique() > 1).sum())
    if switched:
        notes.append(f"{switched} users were served more than one variant (salt changed?)")
    if (first_variant == HOLDOUT_VARIANT).any() and HOLDOUT_VARIANT not in variants:
        variants.append(HOLDOUT_VARIANT)
    index_of = {name: i for i, name in enumerate(variants)}
    user_variant = first_variant.map(index_of)
    unknown = int(user_variant.isna().sum())
    if unknown:
        notes.append(f"{unknown} users logged with a variant not in the definition (ignored)")
        user_variant = user_variant.dropna()
    user_ids = user_variant.index.to_numpy()
    uidx = pd.Series(np.arange(len(user_ids)), index=user_ids)

    day0 = int(exposures["timestamp_ms"].min()) // DAY_MS * DAY_MS
    exposures = exposures[exposures["user_id"].isin(uidx.index)]
    served = exposures[exposures["n_items"] > 0]
    first_ms = served.groupby("user_id")["timestamp_ms"].min()
    first_exposed_ms = np.full(len(user_ids), np.iinfo(np.int64).max, dtype=np.int64)
    first_exposed_ms[uidx[first_ms.index].to_numpy()] = first_ms.to_numpy()

    events = events.drop_duplicates("event_id", keep="first") if len(events) else events
    ev_user, ev_day, ev_type = _attribute(events, exposures, uidx, first_exposed_ms, day0)
    exp_day = (exposures["timestamp_ms"].to_numpy() - day0) // DAY_MS
    n_days = int(max(exp_day.max(initial=0), ev_day.max(initial=0))) + 1

    counts = np.zeros((3, len(user_ids), n_days), dtype=np.float64)
    np.add.at(counts, (ev_type, ev_user, ev_day), 1.0)
    source = "events"
    if counts[IMPRESSION].sum() == 0 and len(served):
        source = "served"
        su = uidx[served["user_id"]].to_numpy()
        sd = (served["timestamp_ms"].to_numpy() - day0) // DAY_MS
        np.add.at(counts[IMPRESSION], (su, sd), served["n_items"].to_numpy(dtype=np.float64))
        notes.append("no impression events logged: served items count as impressions")
    exposed = first_exposed_ms < np.iinfo(np.int64).max
    first_day = np.where(exposed, (first_exposed_ms - day0) // DAY_MS, -1)
    return ExperimentData(
        variants=variants,
        user_variant=user_variant.to_numpy(dtype=np.int64),
        first_exposed_day=first_day.astype(np.int64),
        counts=counts,
        day0_ms=day0,
        impressions_source=source,
        switched_users=switched,
        unknown_variant_users=unknown,
        notes=notes,
    )


def _attribute(
    events: pd.DataFrame,
    exposures: pd.DataFrame,
    uidx: pd.Series,
    first_exposed_ms: np.ndarray,
    day0: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user index, day, type index) of each event that counts for the experiment."""
    empty = np.zeros(0, dtype=np.int64)
    if events.empty:
        return empty, empty, empty
    request_user = exposures.drop_duplicates("request_id").set_index("request_id")["user_id"]
    request_user = request_user[request_user.index != ""]
    by_request = events["request_id"].map(request_user)
    user = by_request.fillna(events["user_id"])
    known = user.isin(uidx.index)
    u = np.full(len(events), -1, dtype=np.int64)
    u[known.to_numpy()] = uidx[user[known]].to_numpy()
    ts = events["timestamp_ms"].to_numpy(dtype=np.int64)
    via_request = by_request.notna().to_numpy()
    after_first = np.zeros(len(events), dtype=bool)
    after_first[u >= 0] = ts[u >= 0] >= first_exposed_ms[u[u >= 0]]
    keep = (u >= 0) & (via_request | after_first)
    types = events["type"].map(_EVENT_INDEX).to_numpy()
    return u[keep], (ts[keep] - day0) // DAY_MS, types[keep].astype(np.int64)


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricLook:
    """Every variant's CTR and conversion at one look (cumulative through a day)."""

    users: np.ndarray
    exposed: np.ndarray
    totals: np.ndarray  # [V, 3]
    ctr: list[stats.Estimate]
    conversion: list[stats.Estimate]


def look(data: ExperimentData, day: int, cumulative: np.ndarray | None = None) -> MetricLook:
    """Metrics over the users exposed by the end of ``day`` and their events so far."""
    if cumulative is None:
        cumulative = data.counts.cumsum(axis=2)
    imps, clicks, purchases = (cumulative[t, :, day] for t in (IMPRESSION, CLICK, PURCHASE))
    n_var = len(data.variants)
    exposed_mask = (data.first_exposed_day >= 0) & (data.first_exposed_day <= day)
    users = np.bincount(data.user_variant, minlength=n_var)
    exposed = np.bincount(data.user_variant[exposed_mask], minlength=n_var)
    totals = np.zeros((n_var, 3))
    ctr, conversion = [], []
    for v in range(n_var):
        sel = exposed_mask & (data.user_variant == v)
        totals[v] = imps[sel].sum(), clicks[sel].sum(), purchases[sel].sum()
        ctr.append(stats.ratio_estimate(clicks[sel], imps[sel]))
        conversion.append(stats.mean_estimate((purchases[sel] > 0).astype(np.float64)))
    return MetricLook(users, exposed, totals, ctr, conversion)


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class Report:
    experiment: Experiment
    srm_p_value: float
    variants: list[dict[str, Any]]
    series: list[dict[str, Any]]
    data: ExperimentData
    mixing_relative_sd: float = stats.MIXING_RELATIVE_SD

    @property
    def srm_warning(self) -> bool:
        return math.isfinite(self.srm_p_value) and self.srm_p_value < SRM_ALPHA

    def warnings(self) -> list[str]:
        out = []
        if self.srm_warning:
            counts = ", ".join(f"{v['name']}={v['users']}" for v in self.variants)
            out.append(
                f"SAMPLE RATIO MISMATCH: p = {self.srm_p_value:.2g} < {SRM_ALPHA} "
                f"(users {counts}); assignment or logging is broken, do not trust the lifts"
            )
        return out + list(self.data.notes)

    def to_json(self) -> dict[str, Any]:
        exp = self.experiment
        return {
            "experiment": exp.name,
            "srm_p_value": _clean(self.srm_p_value),
            "srm_warning": self.srm_warning,
            "status": exp.status,
            "impressions_source": self.data.impressions_source,
            "mixing_relative_sd": self.mixing_relative_sd,
            "warnings": self.warnings(),
            "variants": [{k: _clean(v) for k, v in row.items()} for row in self.variants],
            "series": [{k: _clean(v) for k, v in row.items()} for row in self.series],
        }


def compute_report(
    experiment: Experiment,
    data: ExperimentData,
    mixing_relative_sd: float = stats.MIXING_RELATIVE_SD,
) -> Report:
    """Per-variant metrics and lifts, SRM, and the daily series with always-valid p-values.

    ``mixing_relative_sd`` sets the mSPRT mixing sd τ as a share of the control's value.
    """
    n_declared = len(experiment.variants)
    days = data.days
    cumulative = data.counts.cumsum(axis=2)
    looks = [look(data, d, cumulative) for d in range(days)]
    series, seq = _series(data, looks, mixing_relative_sd)
    final = looks[-1]
    srm = stats.srm_p_value(final.users[:n_declared], variant_shares(experiment))
    rows = []
    for v, name in enumerate(data.variants):
        row = _variant_row(name, v, final)
        if v == 0:
            row |= dict.fromkeys(_LIFT_KEYS)
        else:
            row |= _lift_fields(final, v)
            row["seq_p_value"] = seq["ctr"][v][-1]
            row["conversion_seq_p_value"] = seq["conversion"][v][-1]
        row["holdout"] = name == HOLDOUT_VARIANT and experiment.holdout > 0
        rows.append(row)
    return Report(experiment, srm, rows, series, data, mixing_relative_sd)


_LIFT_KEYS = (
    "lift",
    "ci_low",
    "ci_high",
    "p_value",
    "abs_lift",
    "abs_ci_low",
    "abs_ci_high",
    "seq_p_value",
    "conversion_lift",
    "conversion_lift_ci_low",
    "conversion_lift_ci_high",
    "conversion_abs_lift",
    "conversion_p_value",
    "conversion_seq_p_value",
)


def _variant_row(name: str, v: int, final: MetricLook) -> dict[str, Any]:
    ctr, conv = final.ctr[v], final.conversion[v]
    ctr_lo, ctr_hi = ctr.ci()
    conv_lo, conv_hi = conv.ci()
    return {
        "name": name,
        "users": int(final.users[v]),
        "exposed_users": int(final.exposed[v]),
        "impressions": int(final.totals[v, IMPRESSION]),
        "clicks": int(final.totals[v, CLICK]),
        "purchases": int(final.totals[v, PURCHASE]),
        "ctr": ctr.value,
        "ctr_ci_low": ctr_lo,
        "ctr_ci_high": ctr_hi,
        "conversion": conv.value,
        "conversion_ci_low": conv_lo,
        "conversion_ci_high": conv_hi,
        "clicks_per_user": _per(final.totals[v, CLICK], final.exposed[v]),
        "purchases_per_user": _per(final.totals[v, PURCHASE], final.exposed[v]),
    }


def _per(total: float, users: int) -> float:
    return float(total) / users if users else math.nan


def _lift_fields(final: MetricLook, v: int) -> dict[str, Any]:
    c = stats.compare(final.ctr[v], final.ctr[0])
    k = stats.compare(final.conversion[v], final.conversion[0], welch=True)
    return {
        "lift": c.rel_lift,
        "ci_low": c.rel_ci[0],
        "ci_high": c.rel_ci[1],
        "p_value": c.p_value,
        "abs_lift": c.abs_lift,
        "abs_ci_low": c.abs_ci[0],
        "abs_ci_high": c.abs_ci[1],
        "conversion_lift": k.rel_lift,
        "conversion_lift_ci_low": k.rel_ci[0],
        "conversion_lift_ci_high": k.rel_ci[1],
        "conversion_abs_lift": k.abs_lift,
        "conversion_p_value": k.p_value,
    }


def _series(
    data: ExperimentData, looks: list[MetricLook], mixing_relative_sd: float
) -> tuple[list[dict[str, Any]], dict[str, list[list[float]]]]:
    """Daily cumulative rows per variant, and the always-valid p-values per metric."""
    n_var = len(data.variants)
    seq: dict[str, list[list[float]]] = {"ctr": [], "conversion": []}
    for metric in seq:
        for v in range(n_var):
            diffs, variances, taus = [], [], []
            for lk in looks:
                est = getattr(lk, metric)
                diffs.append(est[v].value - est[0].value)
                variances.append(est[v].variance + est[0].variance)
                taus.append(stats.mixing_sd(est[0].value, mixing_relative_sd))
            p = stats.always_valid_p_values(
                np.asarray(diffs), np.asarray(variances), np.asarray(taus)
            )
            seq[metric].append(p.tolist())
    rows = []
    for day, lk in enumerate(looks):
        for v, name in enumerate(data.variants):
            row = {"date": data.day_label(day), "variant": name} | _variant_row(name, v, lk)
            if v > 0:
                c = stats.compare(lk.ctr[v], lk.ctr[0])
                k = stats.compare(lk.conversion[v], lk.conversion[0], welch=True)
                row |= {
                    "lift": c.rel_lift,
                    "ci_low": c.rel_ci[0],
                    "ci_high": c.rel_ci[1],
                    "p_value": c.p_value,
                    "seq_p_value": seq["ctr"][v][day],
                    "conversion_lift": k.rel_lift,
                    "conversion_lift_ci_low": k.rel_ci[0],
                    "conversion_lift_ci_high": k.rel_ci[1],
                    "conversion_seq_p_value": seq["conversion"][v][day],
                }
            rows.append(row)
    return rows, seq


# -- from the store --------------------------------------------------------------------------


def load_definition(store: OnlineStore, name: str) -> Experiment:
    doc = store.get_document(NAMESPACE, name)
    if doc is None:
        known = sorted(store.list_documents(NAMESPACE))
        listing = ", ".join(known) if known else "none defined"
        raise UsageError(f"no experiment named {name!r} (known: {listing})")
    return parse_experiment(doc, f"stored experiment {name!r}")


def _progress(rows: Iterator[dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    """Periodic progress lines on stderr for long logs (tqdm bar on a terminal)."""
    from tqdm import tqdm

    return iter(
        tqdm(rows, desc=what, unit=" rows", disable=not sys.stderr.isatty(), mininterval=1.0)
    )


def build_report(
    store: OnlineStore, name: str, mixing_relative_sd: float = stats.MIXING_RELATIVE_SD
) -> Report:
    experiment = load_definition(store, name)
    exposures = exposure_frame(_progress(store.read_log("exposure"), "exposure log"), name)
    since = int(exposures["timestamp_ms"].min()) if len(exposures) else None
    users = set(exposures["user_id"])
    requests = set(exposures["request_id"]) - {""}
    event_rows = store.read_log("event", since_ms=since) if users else iter(())
    events = event_frame(_progress(event_rows, "event log"), users, requests)
    data = collect(experiment, exposures, events)
    return compute_report(experiment, data, mixing_relative_sd)


# -- output ----------------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("name", "variant", "{}"),
    ("users", "users", "{}"),
    ("exposed_users", "exposed", "{}"),
    ("impressions", "impr", "{}"),
    ("clicks", "clicks", "{}"),
    ("purchases", "purch", "{}"),
    ("ctr", "ctr", "{:.4f}"),
    ("lift", "ctr lift", "{:+.2%}"),
    ("ci_low", "95% ci low", "{:+.2%}"),
    ("ci_high", "95% ci high", "{:+.2%}"),
    ("p_value", "p", "{:.3g}"),
    ("seq_p_value", "seq p", "{:.3g}"),
    ("conversion", "conv", "{:.4f}"),
    ("conversion_lift", "conv lift", "{:+.2%}"),
    ("conversion_p_value", "conv p", "{:.3g}"),
)


def format_table(report: Report) -> str:
    def cell(value: Any, fmt: str) -> str:
        value = _clean(value)
        return "-" if value is None else fmt.format(value)

    header = [title for _, title, _ in TABLE_COLUMNS]
    body = [[cell(row[key], fmt) for key, _, fmt in TABLE_COLUMNS] for row in report.variants]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        f"experiment {report.experiment.name} ({report.experiment.status}), "
        f"{report.data.days} day(s), control = {report.experiment.control.name}",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    srm = _clean(report.srm_p_value)
    lines.append(f"SRM chi-square p = {'-' if srm is None else f'{srm:.3g}'}")
    lines += [
        f"!!! {w}" if report.srm_warning and i == 0 else f"note: {w}"
        for i, w in enumerate(report.warnings())
    ]
    return "\n".join(lines) + "\n"


def format_csv(report: Report) -> str:
    buf = io.StringIO()
    keys = list(report.variants[0]) if report.variants else ["name"]
    writer = csv.DictWriter(buf, fieldnames=["experiment", *keys, "srm_p_value"])
    writer.writeheader()
    for row in report.variants:
        clean = {k: _clean(v) for k, v in row.items()}
        writer.writerow(
            {
                "experiment": report.experiment.name,
                **clean,
                "srm_p_value": _clean(report.srm_p_value),
            }
        )
    return buf.getvalue()


def format_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2) + "\n"


def plot_report(report: Report, path: str | Path) -> Path:
    """PNG: CTR, conversion and their lifts per variant with 95% CIs over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    frame = pd.DataFrame(report.series)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [
        (axes[0, 0], "ctr", "ctr_ci_low", "ctr_ci_high", "CTR", False),
        (axes[0, 1], "conversion", "conversion_ci_low", "conversion_ci_high", "conversion", False),
        (axes[1, 0], "lift", "ci_low", "ci_high", "CTR relative lift vs control", True),
        (
            axes[1, 1],
            "conversion_lift",
            "conversion_lift_ci_low",
            "conversion_lift_ci_high",
            "conversion relative lift vs control",
            True,
        ),
    ]
    for ax, key, lo, hi, title, lift in panels:
        for index, name in enumerate(report.data.variants):
            part = frame[frame["variant"] == name] if len(frame) else frame
            if (lift and index == 0) or part.empty or key not in part:
                continue
            x = pd.to_datetime(part["date"])
            colour = f"C{index % 10}"  # a variant keeps its colour across panels
            ax.plot(x, part[key].astype(float), marker="o", label=name, color=colour)
            ax.fill_between(
                x, part[lo].astype(float), part[hi].astype(float), alpha=0.2, color=colour
            )
        if lift:
            ax.axhline(0.0, color="grey", lw=1)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", rotation=30)
    srm = _clean(report.srm_p_value)
    fig.suptitle(
        f"experiment {report.experiment.name}: cumulative daily values, 95% CI"
        + ("" if srm is None else f" (SRM p = {srm:.3g})")
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
