"""Online events as training data: export the feature store's event log as contract
``interactions``, and load several data folders (contract files + exported events) as one
``Dataset`` with duplicates removed.

An exported folder holds ``interactions.parquet`` (``event_id``, ``user_id``, ``item_id``,
``timestamp`` epoch seconds, ``event_type``, ``timestamp_ms``) and ``events.json`` (where
and when it came from). Exporting again into the same folder merges by ``event_id``, so an
export is idempotent and a folder grows across exports even after the store's bounded log
has dropped old events.

Merging folders (each first validated alone, so an error names its file, row and column):

- an ``event_id`` seen twice is one event (exports of overlapping windows);
- a row (user, item, timestamp, event type, weight) present in several folders counts as
  many times as the folder holding it most often, not the sum (an event that is both in
  the files and in an export is one event);
- users only seen in events (new online users) join the users table with empty features;
  events on items the items table does not know are dropped and counted (they cannot be
  served);
- users/items/artwork rows: the first folder that lists a key wins.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from training.data import Dataset, load_dataset
from training.errors import DataValidationError

EVENTS_MANIFEST = "events.json"
EVENTS_FILE = "interactions.parquet"
EXPORT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.int64()),
        ("event_type", pa.string()),
        ("timestamp_ms", pa.int64()),
    ]
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- export ---------------------------------------------------------------------------------


def parse_since(text: str, now_s: float | None = None) -> int:
    """``--since`` as epoch milliseconds: epoch seconds, ISO-8601, or an age (30m, 24h, 7d)."""
    value = text.strip()
    now = datetime.now(UTC).timestamp() if now_s is None else now_s
    match = _DURATION.match(value)
    if match:
        return int((now - float(match.group(1)) * _UNIT_S[match.group(2)]) * 1000)
    try:
        return int(float(value) * 1000)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataValidationError(
            f"--since {text!r}: expected epoch seconds, ISO-8601 or an age like 24h / 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    read: int  # events read from the store
    new: int  # of them, not already in the folder
    total: int  # rows in the folder now
    counts: Mapping[str, int] = field(default_factory=dict)  # total rows per event type


def export_events(
    rows: Iterator[Mapping[str, Any]], out_dir: Path, source: str, since_ms: int
) -> ExportResult:
    """Write ``rows`` (the store's event-log rows) into ``out_dir`` merged by ``event_id``
    with what an earlier export left there; the file is replaced atomically."""
    out_dir = Path(out_dir)
    _check_export_folder(out_dir)
    columns: dict[str, list[Any]] = {name: [] for name in EXPORT_SCHEMA.names}
    read = 0
    for row in rows:
        read += 1
        ms = int(row["timestamp_ms"])
        columns["event_id"].append(str(row["event_id"]))
        columns["user_id"].append(str(row["user_id"]))
        columns["item_id"].append(str(row["item_id"]))
        columns["timestamp"].append(ms // 1000)
        columns["event_type"].append(str(row["type"]))
        columns["timestamp_ms"].append(ms)
    fresh = pa.table(columns, schema=EXPORT_SCHEMA).to_pandas()
    target = out_dir / EVENTS_FILE
    before = pq.read_table(target, schema=EXPORT_SCHEMA).to_pandas() if target.exists() else None
    merged = fresh if before is None else pd.concat([before, fresh], ignore_index=True)
    merged = merged.drop_duplicates("event_id", keep="first")
    merged = merged.sort_values(["timestamp_ms", "event_id"], kind="stable").reset_index(drop=True)
    new = len(merged) - (0 if before is None else len(before))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{EVENTS_FILE}.tmp"
    pq.write_table(pa.Table.from_pandas(merged, schema=EXPORT_SCHEMA, preserve_index=False), tmp)
    tmp.replace(target)
    counts = {str(k): int(v) for k, v in merged["event_type"].value_counts().sort_index().items()}
    info = {
        "source": source,
        "last_export": datetime.now(UTC).isoformat(timespec="seconds"),
        "last_since_ms": since_ms,
        "rows": len(merged),
        "event_types": counts,
        "first_timestamp_ms": int(merged["timestamp_ms"].min()) if len(merged) else None,
        "last_timestamp_ms": int(merged["timestamp_ms"].max()) if len(merged) else None,
    }
    tmp_info = out_dir / f".{EVENTS_MANIFEST}.tmp"
    tmp_info.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp_info.replace(out_dir / EVENTS_MANIFEST)
    return ExportResult(target, read, new, len(merged), counts)


def _check_export_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataValidationError(f"--out {out_dir}: exists and is not a folder")
    if not out_dir.is_dir() or is_events_folder(out_dir):
        return
    others = [p.name for p in out_dir.iterdir() if p.name.startswith("interactions.")]
    if others:
        raise DataValidationError(
            f"--out {out_dir}: holds {others[0]} that is not an event export "
            f"(no {EVENTS_MANIFEST}); export into a folder of its own"
        )


def is_events_folder(path: Path) -> bool:
    return (Path(path) / EVENTS_MANIFEST).is_file()


# --- several folders as one dataset -------------------------------------------------------


@dataclass(frozen=True)
class MergeReport:
    folders: list[str]
    rows_in: int
    duplicate_event_ids: int
    duplicate_rows: int
    users_added: int  # users known only from events, added with empty features
    rows_unknown_item: int  # dropped: item not in the items table
    rows_out: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_sources(
    folders: Sequence[Path], event_weights: Mapping[str, float] | None = None
) -> tuple[Dataset, MergeReport | None]:
    """One folder: ``load_dataset`` as is (report None). Several: each validated alone,
    then merged as the module docstring says."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise DataValidationError("no data folder given")
    if len(folders) == 1:
        return load_dataset(folders[0], event_weights), None
    seen: set[Path] = set()
    for folder in folders:
        resolved = folder.resolve()
        if resolved in seen:
            raise DataValidationError(f"--data {folder}: given twice")
        seen.add(resolved)
    parts = [load_dataset(folder, event_weights) for folder in folders]
    return merge_datasets(parts, folders)


def _event_ids(folder: Path, rows: int) -> np.ndarray:
    """event_id per interaction row of an exported folder ("" for contract files)."""
    if not is_events_folder(folder):
        return np.full(rows, "", dtype=object)
    ids = pq.read_table(folder / EVENTS_FILE, columns=["event_id"]).column(0)
    return np.asarray(ids.to_pylist(), dtype=object)


def merge_datasets(
    parts: Sequence[Dataset], folders: Sequence[Path]
) -> tuple[Dataset, MergeReport]:
    frames = []
    for n, (part, folder) in enumerate(zip(parts, folders, strict=True)):
        frame = part.interactions.copy()
        for column in ("user_id", "item_id", "event_type"):
            frame[column] = frame[column].astype(str)
        frame["event_id"] = _event_ids(folder, len(frame))
        frame["_folder"] = n
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    rows_in = len(rows)
    with_id = rows["event_id"] != ""
    dup_ids = with_id & rows.duplicated("event_id", keep="first")
    rows = rows[~dup_ids.to_numpy()]
    key = ["user_id", "item_id", "timestamp", "event_type", "weight"]
    # The n-th copy of a key within its folder; keeping distinct (key, n) keeps the largest
    # multiplicity any one folder has.
    rows = rows.assign(_copy=rows.groupby([*key, "_folder"], sort=False).cumcount())
    dup_rows = rows.duplicated([*key, "_copy"], keep="first")
    rows = rows[~dup_rows.to_numpy()]

    users = _union_entities([p.users for p in parts], ["user_id"])
    items = _union_entities([p.items for p in parts], ["item_id"])
    artwork = _union_entities([p.artwork for p in parts], ["item_id", "variant_id"])
    unknown_item = 0
    if items is not None:
        known = rows["item_id"].isin(items["item_id"]).to_numpy()
        unknown_item = int((~known).sum())
        rows = rows[known]
    added = 0
    if users is not None:
        missing = pd.Index(rows["user_id"].unique()).difference(pd.Index(users["user_id"]))
        added = len(missing)
        if added:
            stub = pd.DataFrame({c: "" for c in users.columns}, index=range(added))
            stub["user_id"] = np.asarray(missing, dtype=object)
            users = pd.concat([users, stub.astype("str")], ignore_index=True)
    interactions = pd.DataFrame(
        {
            "user_id": _sorted_category(rows["user_id"]),
            "item_id": _sorted_category(rows["item_id"]),
            "timestamp": rows["timestamp"].to_numpy(dtype=np.int64),
            "event_type": pd.Categorical(rows["event_type"].to_numpy(dtype=object)),
            "weight": rows["weight"].to_numpy(dtype=np.float32),
        }
    )
    digest = hashlib.sha256("|".join(p.fingerprint for p in parts).encode()).hexdigest()
    files = {
        name: " + ".join(p.files[name] for p in parts if name in p.files)
        for name in ("interactions", "users", "items", "artwork")
        if any(name in p.files for p in parts)
    }
    report = MergeReport(
        folders=[str(f) for f in folders],
        rows_in=rows_in,
        duplicate_event_ids=int(dup_ids.sum()),
        duplicate_rows=int(dup_rows.sum()),
        users_added=added,
        rows_unknown_item=unknown_item,
        rows_out=len(interactions),
    )
    dataset = Dataset(
        interactions=interactions,
        users=users,
        items=items,
        artwork=artwork,
        fingerprint=digest,
        files=files,
    )
    return dataset, report


def _sorted_category(values: pd.Series) -> pd.Categorical:
    strings = values.to_numpy(dtype=object)
    categories = pd.Index(np.unique(strings.astype(str)), dtype="str")
    return pd.Categorical(strings, categories=categories)


def _union_entities(frames: Sequence[pd.DataFrame | None], keys: list[str]) -> pd.DataFrame | None:
    present = [f for f in frames if f is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    merged = pd.concat(present, ignore_index=True).fillna("").astype("str")
    return merged.drop_duplicates(keys, keep="first").reset_index(drop=True)
