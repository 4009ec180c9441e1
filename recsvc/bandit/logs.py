"""Readers of logged bandit feedback: the Open Bandit Dataset and our own exposure logs.

Open Bandit Dataset (Saito et al. 2021, "Open Bandit Dataset and Pipeline"): one CSV per
(logging policy, campaign), one row per (round, position) with ``item_id``, ``position``,
``click``, ``propensity_score``, ``user_feature_0..3`` and ``user-item_affinity_*``, plus an
``item_context.csv`` beside it.

Our logs: ``store.export_log("exposure", …)`` (one row per request with ``item_ids``,
``variant_ids``, ``propensities`` lists and a ``context`` map) joined with
``store.export_log("event", …)`` on ``request_id``: a (request, item) round has reward 1 when a
click event names that request, item and variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsvc.errors import DataValidationError

OBD_CAMPAIGNS = ("all", "men", "women")
OBD_COLUMNS = ("item_id", "position", "click", "propensity_score")
OBD_USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))


@dataclass(frozen=True)
class ObdLog:
    """One OBD file: rounds in time order; ``position`` is 0-based."""

    frame: pd.DataFrame
    item_context: pd.DataFrame | None
    n_actions: int
    n_positions: int
    source: Path

    @property
    def user_features(self) -> list[str]:
        return [c for c in OBD_USER_FEATURES if c in self.frame.columns]


def resolve_obd_file(path: Path, campaign: str) -> Path:
    """A CSV path, a campaign directory, or a policy directory holding campaign folders."""
    path = Path(path)
    if campaign not in OBD_CAMPAIGNS:
        raise DataValidationError(f"unknown OBD campaign {campaign!r}; one of {OBD_CAMPAIGNS}")
    for candidate in (path, path / f"{campaign}.csv", path / campaign / f"{campaign}.csv"):
        if candidate.is_file():
            return candidate
    raise DataValidationError(
        f"no Open Bandit Dataset file for campaign '{campaign}' under {path} "
        f"(expected {campaign}/{campaign}.csv or a CSV path)",
        file=str(path),
    )


def read_obd(path: Path, campaign: str = "all") -> ObdLog:
    """Read one OBD campaign file, checking the columns the estimators need."""
    file = resolve_obd_file(path, campaign)
    try:
        frame = pd.read_csv(file, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataValidationError(f"cannot read CSV: {exc}", file=str(file)) from None
    if frame.empty:
        raise DataValidationError("file has no rows", file=str(file))
    for col in OBD_COLUMNS:
        if col not in frame.columns:
            raise DataValidationError("missing column", file=str(file), column=col)
    bad = ~frame["propensity_score"].between(0.0, 1.0, inclusive="right")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is row 1
        raise DataValidationError(
            "propensity_score must be in (0, 1]", file=str(file), row=row, column="propensity_score"
        )
    if "timestamp" in frame.columns:
        frame = frame.sort_values("timestamp", kind="stable")
    frame = frame.reset_index(drop=True)
    positions = np.sort(frame["position"].unique())
    frame["position"] = np.searchsorted(positions, frame["position"].to_numpy())
    for col in OBD_USER_FEATURES:
        if col in frame.columns:
            frame[col] = frame[col].astype(str)
    context_file = file.parent / "item_context.csv"
    item_context = pd.read_csv(context_file, index_col=0) if context_file.is_file() else None
    n_actions = int(frame["item_id"].max()) + 1
    if item_context is not None:
        n_actions = max(n_actions, int(item_context["item_id"].max()) + 1)
    return ObdLog(frame, item_context, n_actions, len(positions), file)


# -- our own logs ------------------------------------------------------------------------------
EXPOSURE_COLUMNS = ("request_id", "user_id", "item_ids", "variant_ids", "propensities")
EVENT_COLUMNS = ("request_id", "item_id", "type", "variant_id")


def _find(directory: Path, word: str) -> Path:
    found = sorted(p for p in directory.glob("*.parquet") if word in p.name)
    if not found:
        raise DataValidationError(
            f"no Parquet file with '{word}' in its name under {directory} "
            "(expected store.export_log('exposure'|'event', …) output)",
            file=str(directory),
        )
    return found[0]


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"cannot read Parquet: {exc}", file=str(path)) from None
    for col in columns:
        if col not in frame.columns:
            raise DataValidationError("missing column", file=str(path), column=col)
    return frame


def read_recsvc_logs(path: Path) -> pd.DataFrame:
    """Rounds from our exposure + event logs: one row per (request, item with artwork).

    ``path`` is a directory holding ``*exposure*.parquet`` and ``*event*.parquet``, or the
    exposure file itself with the event file beside it. Columns: ``request_id, user_id,
    timestamp_ms, position (0-based rank), item_id, variant_id, propensity, click, policy,
    experiment, variant, context`` (a dict).
    """
    path = Path(path)
    if path.is_dir():
        exposure_file, event_file = _find(path, "exposure"), _find(path, "event")
    elif path.is_file():
        exposure_file, event_file = path, _find(path.parent, "event")
    else:
        raise DataValidationError("no such file or directory", file=str(path))
    exp = _read_parquet(exposure_file, EXPOSURE_COLUMNS)
    events = _read_parquet(event_file, EVENT_COLUMNS)
    rows = []
    records: list[dict[str, Any]] = exp.to_dict("records")  # type: ignore[assignment]
    for rec in records:
        items, variants = list(rec["item_ids"]), list(rec["variant_ids"])
        props = [float(p) for p in rec["propensities"]]
        if not len(items) == len(variants) == len(props):
            raise DataValidationError(
                f"request {rec['request_id']}: item_ids, variant_ids and propensities differ "
                "in length",
                file=str(exposure_file),
            )
        ctx = dict(rec.get("context") or {})
        head = (rec["request_id"], rec["user_id"], int(rec.get("timestamp_ms") or 0))
        tail = (rec.get("policy", ""), rec.get("experiment", ""), rec.get("variant", ""), ctx)
        for pos, (item, variant, prop) in enumerate(zip(items, variants, props, strict=True)):
            if variant:
                rows.append((*head, pos, item, variant, prop, *tail))
    frame = pd.DataFrame(
        rows,
        columns=[
            "request_id",
            "user_id",
            "timestamp_ms",
            "position",
            "item_id",
            "variant_id",
            "propensity",
            "policy",
            "experiment",
            "variant",
            "context",
        ],
    )
    clicks = events[(events["type"] == "click") & (events["request_id"] != "")]
    clicked = set(zip(clicks["request_id"], clicks["item_id"], clicks["variant_id"], strict=True))
    frame["click"] = [
        1.0 if (r, i, v) in clicked else 0.0
        for r, i, v in zip(frame["request_id"], frame["item_id"], frame["variant_id"], strict=True)
    ]
    if (frame["propensity"] <= 0).any():
        bad = frame.loc[frame["propensity"] <= 0, "request_id"].iloc[0]
        raise DataValidationError(
            f"request {bad}: propensity <= 0 (the policy logged an impossible choice)",
            file=str(exposure_file),
            column="propensities",
        )
    return frame.sort_values(["timestamp_ms", "request_id", "position"], kind="stable").reset_index(
        drop=True
    )
