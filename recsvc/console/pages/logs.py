"""The store's exposure and event logs as frames, cached briefly (pages share one read)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from feature_store.base import OnlineStore
from recsvc.bandit.logs import read_recsvc_logs

CACHE_S = 5.0
EVENT_COLUMNS = ["event_id", "user_id", "item_id", "type", "timestamp_ms", "request_id",
                 "variant_id"]  # fmt: skip


class LogCache:
    def __init__(self, store: OnlineStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._rounds: tuple[float, pd.DataFrame] | None = None
        self._events: tuple[float, pd.DataFrame, dict[str, str]] | None = None

    def rounds(self) -> pd.DataFrame:
        """One row per (request, item shown with artwork), with its click: the frame
        ``recsvc bandit evaluate --format recsvc`` reads from the exported logs."""
        with self._lock:
            if self._rounds is not None and time.monotonic() - self._rounds[0] < CACHE_S:
                return self._rounds[1]
            with tempfile.TemporaryDirectory(prefix="recsvc-console-") as tmp:
                self.store.export_log("exposure", Path(tmp) / "exposure.parquet")
                self.store.export_log("event", Path(tmp) / "event.parquet")
                frame = read_recsvc_logs(Path(tmp))
            frame["region"] = [str(dict(c or {}).get("region", "")) for c in frame["context"]]
            self._rounds = (time.monotonic(), frame)
            return frame

    def events(self, since_ms: int | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
        """The event log, and each logged request's region (from its exposure context)."""
        with self._lock:
            if self._events is not None and time.monotonic() - self._events[0] < CACHE_S:
                frame, regions = self._events[1], self._events[2]
            else:
                frame = pd.DataFrame(list(self.store.read_log("event")), columns=EVENT_COLUMNS)
                regions = {
                    str(row.get("request_id") or ""): str(
                        (row.get("context") or {}).get("region", "")
                    )
                    for row in self.store.read_log("exposure")
                }
                self._events = (time.monotonic(), frame, regions)
        if since_ms is not None:
            frame = frame[frame["timestamp_ms"] >= since_ms]
        return frame, regions
