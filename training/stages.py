"""Per-stage wall time and peak memory of the offline job, logged as it goes.

Peak RSS per stage is sampled by a background thread (every 20 ms from
``/proc/self/statm``): ``ru_maxrss`` only knows the process-lifetime peak, which hides
which stage set it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MIB = 1 << 20


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss() -> int:
    """Process-lifetime peak RSS in bytes (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.peak = current_rss()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss())


class StageLog:
    """Times named stages; ``stages`` ends up as ``{name: {seconds, peak_rss_mib}}``."""

    def __init__(self, *, verbose: bool = True, prefix: str = "train", interval: float = 0.02):
        self.verbose = verbose
        self.prefix = prefix
        self.interval = interval
        self.stages: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()

    def log(self, message: str) -> None:
        if self.verbose:
            elapsed = time.perf_counter() - self.started
            print(f"[{self.prefix} {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[dict[str, Any]]:
        """Run a stage; the yielded dict collects extra facts to log/record with it."""
        self.log(f"{name}: started{' (' + detail + ')' if detail else ''}")
        facts: dict[str, Any] = {}
        sampler = _Sampler(self.interval)
        sampler.start()
        start = time.perf_counter()
        failed = True
        try:
            yield facts
            failed = False
        finally:
            seconds = time.perf_counter() - start
            peak = sampler.stop()
            entry = {"seconds": round(seconds, 3), "peak_rss_mib": round(peak / _MIB, 1)}
            entry.update(facts)
            self.stages[name] = entry
            extra = ", ".join(f"{k}={v}" for k, v in facts.items())
            self.log(
                f"{name}: {'failed after ' if failed else ''}{seconds:.2f}s, "
                f"peak RSS {peak / _MIB:,.0f} MiB" + (f" ({extra})" if extra else "")
            )

    def summary(self) -> dict[str, Any]:
        return {
            "stages": dict(self.stages),
            "total_seconds": round(time.perf_counter() - self.started, 3),
            "peak_rss_mib": round(peak_rss() / _MIB, 1),
        }
