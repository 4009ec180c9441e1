"""Materialize contract files into the online feature store: user profiles (``region`` and
every other user column) and item attributes (``regions`` and every other item column).

Rows go in batches (one transaction / pipeline each), so memory stays bounded by the
batch, and a re-run overwrites rows in place (idempotent).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pandas as pd

from feature_store.base import OnlineStore
from feature_store.factory import open_store

if TYPE_CHECKING:
    from training.data import Dataset

DEFAULT_BATCH = 5_000
Progress = Callable[[str, int, int], None]  # (table, rows done, rows total)


def materialize(
    dataset: Dataset,
    store: str | OnlineStore,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write the dataset's users and items into ``store`` (a URL or an open store).

    Returns ``{"users": rows written, "items": rows written}``. A store opened here from a
    URL is closed again; a store passed in stays open.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    owned = isinstance(store, str)
    target = open_store(store) if isinstance(store, str) else store
    try:
        users = _write(
            dataset.users, "user_id", "users", target.write_user_profiles, batch_size, progress
        )
        items = _write(
            dataset.items, "item_id", "items", target.write_item_attributes, batch_size, progress
        )
    finally:
        if owned:
            target.close()
    return {"users": users, "items": items}


def _write(
    frame: pd.DataFrame | None,
    key: str,
    table: str,
    write: Callable[[list[tuple[str, Mapping[str, str]]]], int],
    batch_size: int,
    progress: Progress | None,
) -> int:
    if frame is None or frame.empty:
        return 0
    total = 0
    for batch in feature_rows(frame, key, batch_size):
        total += write(batch)
        if progress is not None:
            progress(table, total, len(frame))
    return total


def feature_rows(
    frame: pd.DataFrame, key: str, batch_size: int
) -> Iterator[list[tuple[str, Mapping[str, str]]]]:
    """``(id, {column: value})`` batches; values as str, missing values as ``""``."""
    columns = [c for c in frame.columns if c != key]
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start : start + batch_size]
        ids = chunk[key].astype(str).tolist()
        values = {c: chunk[c].astype("string").fillna("").tolist() for c in columns}
        yield [(row_id, {c: values[c][i] for c in columns}) for i, row_id in enumerate(ids)]


def stderr_progress(every_s: float = 5.0) -> Progress:
    """A tqdm bar per table on a TTY, else a log line at most every ``every_s`` seconds."""
    import time

    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    last = [0.0]

    def report(table: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            bar = bars.get(table) or bars.setdefault(
                table, tqdm(total=total, desc=table, unit="rows", file=sys.stderr)
            )
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
        elif done >= total or time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            print(f"materialize: {table} {done}/{total}", file=sys.stderr, flush=True)

    return report
