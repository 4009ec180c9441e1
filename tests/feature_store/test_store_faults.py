"""Redis faults, for real: a throwaway redis-server is killed, hung and restarted mid-run."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feature_store import (
    CounterDelta,
    ExposureRecord,
    FeatureStoreUnavailable,
    OnlineStore,
    StoredEvent,
    open_store,
)
from tests.fixtures.redis_server import ThrowawayRedis

BOUND_S = 2.0  # timeouts are 0.1 s, one retry at most; slack for a loaded machine


def ev(n: int) -> StoredEvent:
    return StoredEvent(f"e{n}", "u1", f"i{n % 5}", "click", 1_000 + n)


def every_call(store: OnlineStore) -> dict[str, Callable[[], Any]]:
    exposure = ExposureRecord("r1", "u1", 1, ["i1"], ["a"], [1.0])
    return {
        "read_user": lambda: store.read_user("u1", ["c:i1", "c:i2"]),
        "record_events": lambda: store.record_events([ev(99)], [[CounterDelta("c:i1", "n", 1)]]),
        "incr_counters": lambda: store.incr_counters([CounterDelta("c:i1", "n", 1)]),
        "get_counters": lambda: store.get_counters(["c:i1"]),
        "get_item_attributes": lambda: store.get_item_attributes(["i1"]),
        "write_user_profiles": lambda: store.write_user_profiles([("u2", {"region": "CA"})]),
        "log_exposures": lambda: store.log_exposures([exposure]),
        "read_log": lambda: list(store.read_log("event")),
        "put_document": lambda: store.put_document("exp", "a", {"x": 1}),
        "get_document": lambda: store.get_document("exp", "a"),
        "ping": store.ping,
    }


def assert_all_unavailable_fast(store: OnlineStore) -> None:
    for name, call in every_call(store).items():
        start = time.monotonic()
        with pytest.raises(FeatureStoreUnavailable):
            call()
        elapsed = time.monotonic() - start
        assert elapsed < BOUND_S, f"{name} took {elapsed:.2f}s to fail"


def assert_works(store: OnlineStore, n: int) -> None:
    store.write_user_profiles([("u1", {"region": "US"})])
    assert store.record_events([ev(n)], [[CounterDelta("c:i1", "n", 1)]]) == [True]
    state, counters = store.read_user("u1", ["c:i1"])
    assert state.profile == {"region": "US"}
    assert state.recent_events[0].event_id == f"e{n}"
    assert counters["c:i1"]["n"] >= 1


def test_redis_killed_fails_fast_then_recovers_without_restart(
    throwaway_redis: ThrowawayRedis,
) -> None:
    store = open_store(throwaway_redis.url, prefix="fault:")
    try:
        assert_works(store, 1)
        throwaway_redis.kill()
        assert_all_unavailable_fast(store)
        throwaway_redis.start()  # same port, empty (no persistence), scripts not loaded
        assert_works(store, 2)
        for call in every_call(store).values():
            call()  # every method is back, on the same object
    finally:
        store.close()


def test_hung_redis_times_out_then_recovers(throwaway_redis: ThrowawayRedis) -> None:
    store = open_store(throwaway_redis.url, prefix="hang:")
    proc = throwaway_redis.proc
    assert proc is not None
    try:
        assert_works(store, 1)
        proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers: "slow Redis"
        try:
            for call in ("read_user", "record_events", "ping"):
                start = time.monotonic()
                with pytest.raises(FeatureStoreUnavailable):
                    every_call(store)[call]()
                assert time.monotonic() - start < BOUND_S, call
        finally:
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
        assert_works(store, 2)
    finally:
        store.close()


def test_kill_under_load_only_raises_typed_errors(throwaway_redis: ThrowawayRedis) -> None:
    """Threads keep calling while the server dies and comes back: every call either works
    or raises FeatureStoreUnavailable within the bound, and calls work again afterwards."""
    store = open_store(throwaway_redis.url, prefix="load:")
    stop = threading.Event()
    stats: dict[str, Any] = {"ok": 0, "unavailable": 0, "other": [], "slowest": 0.0}
    lock = threading.Lock()

    def worker(t: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            start = time.monotonic()
            try:
                store.record_events(
                    [StoredEvent(f"t{t}-{n}", f"u{t}", "i1", "click", n)],
                    [[CounterDelta("c:i1", "n", 1)]],
                )
                store.read_user(f"u{t}", ["c:i1"])
                outcome = "ok"
            except FeatureStoreUnavailable:
                outcome = "unavailable"
            except BaseException as exc:
                outcome = "other"
                stats["other"].append(repr(exc))
            with lock:
                if outcome != "other":
                    stats[outcome] += 1
                stats["slowest"] = max(stats["slowest"], time.monotonic() - start)
            time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    try:
        for th in threads:
            th.start()
        time.sleep(0.3)
        throwaway_redis.kill()
        time.sleep(0.4)
        ok_before_restart = stats["ok"]
        throwaway_redis.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=10)
    try:
        assert stats["other"] == []
        assert stats["unavailable"] > 0
        assert stats["ok"] > ok_before_restart  # recovered while still running
        assert stats["slowest"] < 2 * BOUND_S  # two calls per iteration
        store.read_user("u0", ["c:i1"])
    finally:
        store.close()


def test_redis_out_of_memory_is_unavailable_and_reads_go_on(
    throwaway_redis: ThrowawayRedis,
) -> None:
    import redis

    admin = redis.Redis.from_url(throwaway_redis.url)
    store = open_store(throwaway_redis.url, prefix="oom:")
    try:
        assert_works(store, 1)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        with pytest.raises(FeatureStoreUnavailable, match="maxmemory"):
            store.record_events([ev(2)], [[CounterDelta("c:i1", "n", 1)]])
        with pytest.raises(FeatureStoreUnavailable, match="maxmemory"):
            store.incr_counters([CounterDelta("c:i1", "n", 1)])
        state, counters = store.read_user("u1", ["c:i1"])  # reads are still served
        assert [e.event_id for e in state.recent_events] == ["e1"]
        assert counters["c:i1"] == {"n": 1.0}
        admin.config_set("maxmemory", "0")
        assert_works(store, 3)
    finally:
        store.close()
        admin.close()


def test_sqlite_writer_lock_held_too_long_is_unavailable(tmp_path: Path) -> None:
    """Another process holding the write lock past busy_timeout_ms: a typed error, no hang;
    reads go on (WAL) and writes work again once the lock is released."""
    import sqlite3

    path = tmp_path / "store.sqlite"
    store = open_store(f"sqlite:///{path}", busy_timeout_ms=100)
    try:
        assert_works(store, 1)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            start = time.monotonic()
            with pytest.raises(FeatureStoreUnavailable, match="locked"):
                store.record_events([ev(2)], [[CounterDelta("c:i1", "n", 1)]])
            assert time.monotonic() - start < BOUND_S
            assert store.read_user("u1", ["c:i1"])[1]["c:i1"] == {"n": 1.0}
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert_works(store, 3)
        assert store.record_events([ev(2)]) == [True]  # the refused event was not recorded
    finally:
        store.close()
