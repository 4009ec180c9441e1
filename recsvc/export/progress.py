"""Progress for long batch jobs: a tqdm bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Counts units (users, items) with rate and ETA; writes only to stderr."""

    def __init__(
        self,
        total: int,
        unit: str,
        desc: str,
        *,
        stream: TextIO | None = None,
        log_every_s: float = 10.0,
        enabled: bool = True,
    ) -> None:
        self.total = total
        self.unit = unit
        self.desc = desc
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._log_every = log_every_s
        self._start = time.perf_counter()
        self._last_log = self._start
        self._bar: tqdm | None = None
        self._enabled = enabled
        if enabled and _isatty(self._stream):
            self._bar = tqdm(
                total=total, unit=unit, desc=desc, file=self._stream, dynamic_ncols=True
            )

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self._enabled and now - self._last_log >= self._log_every:
            self._last_log = now
            print(self.line(now), file=self._stream, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.desc}: {self.done}/{self.total} {self.unit}s ({pct:.1f}%), "
            f"{rate:,.0f} {self.unit}s/s, ETA {left:,.0f}s"
        )

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._start

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
