"""The Redis read path's own connections (feature_store/resp.py), against real servers:
error replies, a bounded pool under threads, fork safety, AUTH and DB selection."""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

import pytest
import redis

from feature_store import CounterDelta, FeatureStoreUnavailable, StoredEvent, open_store
from feature_store.redis import PoolReads, RedisStore
from feature_store.resp import RespConnections
from tests.fixtures.redis_server import ThrowawayRedis

pytestmark = pytest.mark.redis


def open_redis(url: str, prefix: str, **settings: Any) -> RedisStore:
    store = open_store(url, **{"prefix": prefix, "socket_timeout_s": 2.0, **settings})
    assert isinstance(store, RedisStore)
    return store


def test_error_reply_is_unavailable_and_the_connection_stays_usable(
    redis_server_url: str, redis_prefix: str
) -> None:
    store = open_redis(redis_server_url, redis_prefix)
    admin = redis.Redis.from_url(redis_server_url)
    try:
        store.incr_counters([CounterDelta("good", "n", 2)])
        admin.hset(redis_prefix + "cz:wrong", "n", "1")  # not a sorted set
        with pytest.raises(FeatureStoreUnavailable, match="WRONGTYPE"):
            store.read_user("u1", ["good", "wrong"])
        assert store.read_user("u1", ["good"])[1] == {"good": {"n": 2.0}}
        assert isinstance(store._reads, RespConnections)
        assert store._reads._created == 1  # the same socket, still in sync
    finally:
        store.close()
        admin.close()


def test_more_threads_than_connections_all_served(redis_server_url: str, redis_prefix: str) -> None:
    store = open_redis(redis_server_url, redis_prefix, pool_size=2)
    store.record_events([StoredEvent(f"e{n}", f"u{n % 3}", "i1", "click", n) for n in range(9)])
    store.incr_counters([CounterDelta("k", "n", 1)])
    errors: list[str] = []

    def reader(t: int) -> None:
        for _ in range(40):
            state, counters = store.read_user(f"u{t % 3}", ["k"])
            if len(state.recent_events) != 3 or counters != {"k": {"n": 1.0}}:
                errors.append(f"thread {t}: {list(state.recent_events)!r} {counters!r}")

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(6)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert errors == []
        assert isinstance(store._reads, RespConnections)
        assert store._reads._created <= 2
    finally:
        store.close()


def _child_read(store: RedisStore, out: Any) -> None:
    try:
        state, counters = store.read_user("u1", ["k"])
        out.put(([e.event_id for e in state.recent_events], counters, None))
    except BaseException as exc:
        out.put(([], {}, repr(exc)))


def test_forked_child_opens_its_own_sockets(redis_server_url: str, redis_prefix: str) -> None:
    store = open_redis(redis_server_url, redis_prefix)
    try:
        store.record_events(
            [StoredEvent("e1", "u1", "i1", "click", 1)], [[CounterDelta("k", "n", 1)]]
        )
        assert store.read_user("u1", ["k"])[1] == {"k": {"n": 1.0}}  # parent socket is open
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        children = [ctx.Process(target=_child_read, args=(store, out)) for _ in range(2)]
        for child in children:
            child.start()
        for _ in range(20):  # the parent keeps using its socket meanwhile
            assert store.read_user("u1", ["k"])[1] == {"k": {"n": 1.0}}
        results = [out.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=30)
        assert results == [(["e1"], {"k": {"n": 1.0}}, None)] * 2
    finally:
        store.close()


def test_password_and_db_from_the_url(throwaway_redis: ThrowawayRedis) -> None:
    admin = redis.Redis.from_url(throwaway_redis.url)
    admin.config_set("requirepass", "s3cret")
    port = throwaway_redis.port
    store = open_redis(f"redis://:s3cret@127.0.0.1:{port}/3", "auth:")
    wrong = open_redis(f"redis://:nope@127.0.0.1:{port}/3", "auth:", socket_timeout_s=0.5)
    try:
        store.incr_counters([CounterDelta("k", "n", 1)])
        assert store.read_user("u1", ["k"])[1] == {"k": {"n": 1.0}}
        db3 = redis.Redis(port=port, db=3, password="s3cret")
        assert db3.zscore("auth:cz:k", "n") == 1.0  # written to DB 3, and read back above
        db3.close()
        with pytest.raises(FeatureStoreUnavailable, match=r"WRONGPASS|invalid"):
            wrong.read_user("u1", ["k"])
    finally:
        store.close()
        wrong.close()
        admin.close()


def test_redis_py_fallback_reads_the_same(redis_server_url: str, redis_prefix: str) -> None:
    """TLS/unix URLs read through a redis-py RESP3 pool instead: same answers."""
    store = open_redis(redis_server_url, redis_prefix)
    try:
        store.write_user_profiles([("u1", {"region": "US", "age": "30"})])
        store.record_events(
            [StoredEvent(f"e{n}", "u1", f"i{n}", "click", n) for n in range(4)],
            [[CounterDelta("k", "n", 0.5)]] * 4,
        )
        fast = store.read_user("u1", ["k", "none"])
        store._reads.close()
        store._reads = PoolReads(
            store._make_pool(redis_server_url, protocol=3, decode_responses=True)
        )
        assert store.read_user("u1", ["k", "none"]) == fast
        assert store.get_counters(["k"]) == {"k": {"n": 2.0}}
    finally:
        store.close()
