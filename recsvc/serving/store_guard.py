"""The feature store as the server uses it: fail fast when down, recover by itself.

After a :class:`FeatureStoreUnavailable`, calls skip the store for ``retry_s`` (answers are
degraded immediately instead of each waiting for a timeout); the first call after that
probes it again. Exposure records are batched in memory and written by a background task
so the request path never waits on a write.

A batch is written every ``flush_s`` or as soon as ``batch`` records are queued, whichever
comes first: the write runs in a thread but holds the GIL for most of its ~40-70 µs per
record, so one large batch every 200 ms stalled the event loop for 10-20 ms at a time (the
p99 of the serving benchmark); batches of ~64 keep each stall to a few ms.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from feature_store.base import ExposureRecord, OnlineStore
from feature_store.errors import FeatureStoreUnavailable
from recsvc.serving.metrics import ServingMetrics

log = logging.getLogger("recsvc.serving.store")
T = TypeVar("T")


class StoreGuard:
    def __init__(self, store: OnlineStore | None, retry_s: float, metrics: ServingMetrics) -> None:
        self.store = store
        self.retry_s = retry_s
        self.metrics = metrics
        self._down_until = 0.0
        self._down = False

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def call(self, fn: Callable[[OnlineStore], T]) -> T:
        """``fn(store)``, or FeatureStoreUnavailable at once while the store is marked down."""
        store = self._usable()
        try:
            result = fn(store)
        except FeatureStoreUnavailable as exc:
            self._mark_down(exc)
            raise
        self._mark_up(store)
        return result

    async def call_async(self, fn: Callable[[OnlineStore], Awaitable[T]]) -> T:
        """:meth:`call` for a coroutine of the store (``read_user_async``): same fail-fast,
        mark-down and recovery rules."""
        store = self._usable()
        try:
            result = await fn(store)
        except FeatureStoreUnavailable as exc:
            self._mark_down(exc)
            raise
        self._mark_up(store)
        return result

    def _usable(self) -> OnlineStore:
        """The store, or FeatureStoreUnavailable at once: none configured, or marked down."""
        store = self.store
        if store is None:
            raise FeatureStoreUnavailable("no feature store configured")
        if self._down and time.monotonic() < self._down_until:
            raise FeatureStoreUnavailable("feature store marked down; retrying soon")
        return store

    def _mark_up(self, store: OnlineStore) -> None:
        if self._down:
            self._down = False
            self.metrics.store_up.set(1)
            log.warning("feature store recovered", extra={"store": store.url})

    def _mark_down(self, exc: Exception) -> None:
        if not self._down:
            log.error("feature store unavailable; degrading", extra={"error": str(exc)})
        self._down = True
        self._down_until = time.monotonic() + self.retry_s
        self.metrics.store_up.set(0)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class ExposureLog:
    """Bounded in-memory queue of exposure records, flushed in batches off the hot path."""

    def __init__(
        self, guard: StoreGuard, capacity: int, metrics: ServingMetrics, batch: int = 64
    ) -> None:
        self._guard = guard
        self._queue: collections.deque[ExposureRecord] = collections.deque()
        self._capacity = capacity
        self._batch = max(1, batch)
        self._metrics = metrics
        self._inflight: asyncio.Future[None] | None = None
        self._full = asyncio.Event()  # set when a batch is waiting: run() flushes at once

    def add(self, record: ExposureRecord) -> None:
        if not self._guard.enabled:
            return
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._metrics.exposures_dropped.inc()
        self._queue.append(record)
        if len(self._queue) >= self._batch:
            self._full.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def flush(self) -> int:
        """Write what is queued; on failure put it back (oldest first). Returns rows written."""
        if self._inflight is not None and not self._inflight.done():
            # A write still running in its thread (the task that awaited it may have been
            # cancelled at shutdown): wait for it, so the store is never closed under it.
            await asyncio.wait([self._inflight])
        if not self._queue:
            return 0
        batch: Sequence[ExposureRecord] = list(self._queue)
        self._queue.clear()
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(None, self._guard.call, lambda s: s.log_exposures(batch))
        write.add_done_callback(_retrieve)
        self._inflight = write
        try:
            await asyncio.shield(write)  # cancelling the caller must not orphan the write
        except Exception as exc:
            room = max(0, self._capacity - len(self._queue))
            kept = list(batch)[-room:] if room else []
            self._metrics.exposures_dropped.inc(len(batch) - len(kept))
            self._queue.extendleft(reversed(kept))
            if not isinstance(exc, FeatureStoreUnavailable):
                log.error("exposure log write failed", extra={"error": str(exc)})
            return 0
        return len(batch)

    async def run(self, period_s: float) -> None:
        """Flush every ``period_s``, or as soon as a full batch is queued."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), period_s)
            self._full.clear()
            if not await self.flush() and self._queue:
                await asyncio.sleep(period_s)  # the write failed: retry per period, not per call


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a write's outcome as seen (its caller may be gone; flush handles failures)."""
    if not future.cancelled():
        future.exception()
