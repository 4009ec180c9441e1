"""``read_user_async``: the request read for asyncio callers. Same answers as ``read_user`` on
both backends; on Redis one pipelined connection per event loop (feature_store/resp.py),
tested against real servers: many requests in flight, error replies, a killed, a hung and a
restarted Redis."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from feature_store import CounterDelta, FeatureStoreUnavailable, OnlineStore, StoredEvent
from feature_store.redis import RedisStore
from feature_store.resp import AsyncRespConnections
from tests.fixtures.redis_server import ThrowawayRedis

BOUND_S = 2.0  # timeouts are 0.1 s, one retry at most; slack for a loaded machine


def ev(n: int, user: str = "u1") -> StoredEvent:
    return StoredEvent(f"e{n}-{user}", user, f"i{n % 5}", "click", 1_000 + n, f"r{n}", "v1")


def seed(store: OnlineStore) -> None:
    store.write_user_profiles([(f"u{n}", {"region": f"R{n}", "tier": "gold"}) for n in range(8)])
    store.record_events([ev(n, f"u{n % 8}") for n in range(40)])
    store.incr_counters([CounterDelta("c:i1", "shows", 3), CounterDelta("c:i2", "n", 0.5)])


def test_async_read_answers_as_the_sync_read(store: OnlineStore) -> None:
    seed(store)
    keys = ["c:i1", "c:i2", "c:none"]

    async def reads() -> list[Any]:
        return [await store.read_user_async(u, keys) for u in ("u1", "u5", "nobody")]

    for (state, counters), user in zip(asyncio.run(reads()), ("u1", "u5", "nobody"), strict=True):
        sync_state, sync_counters = store.read_user(user, keys)
        assert dict(state.profile) == dict(sync_state.profile)
        assert list(state.recent_events) == list(sync_state.recent_events)
        assert counters == sync_counters
    assert asyncio.run(reads())[0][0].profile == {"region": "R1", "tier": "gold"}
    # one node: a pipelined asyncio socket; a cluster: one per node touched
    assert store.async_reads == isinstance(store, RedisStore)


@pytest.mark.redis
def test_many_reads_in_flight_share_one_connection_in_order(
    redis_server_url: str, redis_prefix: str
) -> None:
    store = _redis(redis_server_url, redis_prefix)
    try:
        seed(store)
        users = [f"u{n % 8}" for n in range(200)] + ["nobody"] * 8

        async def reads() -> list[Any]:
            return await asyncio.gather(*(store.read_user_async(u, ["c:i1"]) for u in users))

        results = asyncio.run(reads())
        for user, (state, counters) in zip(users, results, strict=True):
            want = store.read_user(user, ["c:i1"])
            assert dict(state.profile) == dict(want[0].profile), user
            assert [e.event_id for e in state.recent_events] == [
                e.event_id for e in want[0].recent_events
            ]
            assert counters == {"c:i1": {"shows": 3.0}}
        reads_ = store._async_reads
        assert isinstance(reads_, AsyncRespConnections) and reads_._protocol is not None
        assert not reads_._protocol.pending  # every reply matched to its request
        # A second event loop (asyncio.run again) opens its own connection.
        first = reads_._protocol
        asyncio.run(reads())
        assert reads_._protocol is not first
    finally:
        store.close()


@pytest.mark.redis
def test_error_reply_is_unavailable_and_the_connection_stays_in_sync(
    redis_server_url: str, redis_prefix: str
) -> None:
    store = _redis(redis_server_url, redis_prefix)
    admin = redis.Redis.from_url(redis_server_url)
    try:
        store.incr_counters([CounterDelta("good", "n", 2)])
        admin.hset(redis_prefix + "cz:wrong", "n", "1")  # not a sorted set

        async def mixed() -> list[Any]:
            calls = [store.read_user_async("u1", ["good", "wrong" if n % 2 else "good"])
                     for n in range(10)]  # fmt: skip
            return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(mixed())
        for n, result in enumerate(results):
            if n % 2:
                assert isinstance(result, FeatureStoreUnavailable)
                assert "WRONGTYPE" in str(result)
            else:
                assert result[1] == {"good": {"n": 2.0}}
    finally:
        store.close()
        admin.close()


@pytest.mark.redis
def test_cancelled_reader_leaves_the_connection_usable(
    redis_server_url: str, redis_prefix: str
) -> None:
    store = _redis(redis_server_url, redis_prefix)
    try:
        seed(store)

        async def run() -> Any:
            doomed = asyncio.ensure_future(store.read_user_async("u1", ["c:i1"]))
            await asyncio.sleep(0)  # its request is on the wire
            doomed.cancel()
            others = await asyncio.gather(*(store.read_user_async("u2") for _ in range(5)))
            return doomed, others

        doomed, others = asyncio.run(run())
        assert doomed.cancelled()
        assert all(state.profile["region"] == "R2" for state, _ in others)
    finally:
        store.close()


@pytest.mark.redis
def test_killed_redis_fails_fast_then_recovers(throwaway_redis: ThrowawayRedis) -> None:
    store = _redis(f"redis://127.0.0.1:{throwaway_redis.port}/0", "t:", socket_timeout_s=0.1)
    try:
        seed(store)

        async def scenario() -> None:
            state, _ = await store.read_user_async("u3")
            assert state.profile["region"] == "R3"
            throwaway_redis.kill()
            await _fails_fast(lambda: store.read_user_async("u3"))
            await _fails_fast(lambda: store.read_user_async("u3"))  # connect refused too
            throwaway_redis.start()
            store.write_user_profiles([("u3", {"region": "back"})])
            state, _ = await store.read_user_async("u3")  # a fresh connection, by itself
            assert state.profile == {"region": "back"}

        asyncio.run(scenario())
    finally:
        store.close()


@pytest.mark.redis
def test_hung_redis_times_out_then_recovers(throwaway_redis: ThrowawayRedis) -> None:
    store = _redis(f"redis://127.0.0.1:{throwaway_redis.port}/0", "t:", socket_timeout_s=0.1)
    proc = throwaway_redis.proc
    assert proc is not None
    try:
        seed(store)

        async def scenario() -> None:
            await store.read_user_async("u1")  # connected
            proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
            try:
                calls = [_fails_fast(lambda: store.read_user_async("u1")) for _ in range(5)]
                await asyncio.gather(*calls)
            finally:
                proc.send_signal(signal.SIGCONT)
            state, _ = await store.read_user_async("u1")
            assert state.profile["region"] == "R1"

        asyncio.run(scenario())
    finally:
        store.close()


async def _fails_fast(call: Callable[[], Any]) -> None:
    start = time.monotonic()
    with pytest.raises(FeatureStoreUnavailable):
        await call()
    elapsed = time.monotonic() - start
    assert elapsed < BOUND_S, f"took {elapsed:.2f}s to fail"


def _redis(url: str, prefix: str, **settings: Any) -> RedisStore:
    from feature_store import open_store

    store = open_store(url, **{"prefix": prefix, "socket_timeout_s": 2.0, **settings})
    assert isinstance(store, RedisStore)
    return store
