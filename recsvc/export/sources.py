"""Input lists for export and audience: user lists, item lists and suppression lists.

Each accepts a CSV or Parquet file with a named id column, or a plain text file with one
id per line. Problems are refused with the file (and row) named, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsvc.errors import UsageError

TABULAR_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class IdList:
    """Ids in file order (duplicates dropped) and the other columns, as str features."""

    path: Path
    ids: np.ndarray  # [N] str
    features: dict[str, np.ndarray] = field(default_factory=dict)  # column -> [N] str
    duplicates: int = 0


@dataclass(frozen=True)
class Suppression:
    """Users to leave out entirely, and (user, item) pairs never to recommend."""

    users: frozenset[str] = frozenset()
    pairs: dict[str, frozenset[str]] = field(default_factory=dict)  # user -> items

    @property
    def empty(self) -> bool:
        return not self.users and not self.pairs


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise UsageError(f"{what} file {path}: cannot read it: {exc}") from None


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} file {path}: cannot read it as UTF-8 text: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _str_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = frame[column].to_numpy(dtype=object)
    return np.array(["" if v is None or v != v else str(v) for v in values], dtype=object)


def _check_ids(ids: np.ndarray, path: Path, column: str, first_row: int) -> None:
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise UsageError(f"{path}: row {int(empty[0]) + first_row}: empty {column}")


def read_id_list(path: Path, column: str, what: str) -> IdList:
    """Ids from a CSV/Parquet file with ``column`` or a text file (one id per line)."""
    if path.suffix.lower() not in TABULAR_SUFFIXES:
        lines = _read_lines(path, what)
        if not lines:
            raise UsageError(f"{what} file {path} holds no ids")
        ids = np.array(lines, dtype=object)
        return _dedupe(IdList(path, ids))
    frame = _read_table(path, what)
    if column not in frame.columns:
        raise UsageError(
            f"{what} file {path}: missing column '{column}' (columns: {', '.join(frame.columns)})"
        )
    if frame.empty:
        raise UsageError(f"{what} file {path} holds no rows")
    ids = _str_column(frame, column)
    # Row numbers as a spreadsheet shows them: CSV row 2 is the first data row.
    _check_ids(ids, path, column, 2 if path.suffix.lower() == ".csv" else 1)
    features = {c: _str_column(frame, str(c)) for c in frame.columns if c != column}
    return _dedupe(IdList(path, ids, features))


def _dedupe(ids: IdList) -> IdList:
    _, first = np.unique(ids.ids.astype(str), return_index=True)
    if first.size == ids.ids.size:
        return ids
    keep = np.sort(first)
    features = {c: v[keep] for c, v in ids.features.items()}
    return IdList(ids.path, ids.ids[keep], features, ids.ids.size - keep.size)


def read_suppression(path: Path) -> Suppression:
    """``user_id`` rows (whole user) and ``user_id,item_id`` rows (one pair); or text ids."""
    if path.suffix.lower() not in TABULAR_SUFFIXES:
        return Suppression(users=frozenset(_read_lines(path, "suppression")))
    frame = _read_table(path, "suppression")
    if "user_id" not in frame.columns:
        raise UsageError(
            f"suppression file {path}: missing column 'user_id' "
            f"(columns: {', '.join(frame.columns)}); add item_id to suppress single items"
        )
    users = _str_column(frame, "user_id")
    _check_ids(users, path, "user_id", 2 if path.suffix.lower() == ".csv" else 1)
    if "item_id" not in frame.columns:
        return Suppression(users=frozenset(users.tolist()))
    items = _str_column(frame, "item_id")
    whole = frozenset(users[items == ""].tolist())
    pairs: dict[str, set[str]] = {}
    for user, item in zip(users[items != ""].tolist(), items[items != ""].tolist(), strict=True):
        pairs.setdefault(user, set()).add(item)
    return Suppression(whole, {u: frozenset(s) for u, s in pairs.items()})
