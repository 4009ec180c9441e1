"""The store on a real Redis Cluster (3 masters + 3 replicas on localhost): URL, key
placement, and a master killed under load with nothing acknowledged lost.

The store contract suite runs against the same cluster (test_store_contract.py, backend
``redis-cluster``); this module holds what only a cluster has.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from feature_store import (
    CounterDelta,
    FeatureStoreConfigError,
    FeatureStoreUnavailable,
    StoredEvent,
    open_store,
)
from feature_store.redis import profile_key, recent_key
from feature_store.redis_cluster import RedisClusterStore, key_slot, parse_cluster_url, slot_tag
from tests.fixtures.redis_cluster import RedisCluster

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "only DB 0"),
        ("redis+cluster://127.0.0.1", "is not HOST:PORT"),
        ("redis+cluster://127.0.0.1:7000,:7001", "is not HOST:PORT"),
        ("redis+cluster://127.0.0.1:7000?prefix={x}:", "must not contain braces"),
        ("redis+cluster://127.0.0.1:7000?wait_replicas=-1", "'wait_replicas'='-1'"),
    ],
)
def test_bad_cluster_url_names_the_problem(url: str, named: str) -> None:
    with pytest.raises(FeatureStoreConfigError, match="feature store") as info:
        open_store(url)
    assert named in str(info.value)


def test_cluster_url_seeds_auth_and_tls() -> None:
    seeds, user, password, tls = parse_cluster_url(
        "rediss+cluster://svc:p%40ss@10.0.0.1:7000,[::1]:7001,redis-2:7002?prefix=a:"
    )
    assert seeds == [("10.0.0.1", 7000), ("::1", 7001), ("redis-2", 7002)]
    assert (user, password, tls) == ("svc", "p@ss", True)
    assert parse_cluster_url("redis+cluster://h:1")[1:] == (None, None, False)


def test_one_users_keys_share_a_slot_and_counters_spread() -> None:
    for user in ("u1", "user-with:colons", "ü"):
        assert key_slot(profile_key("recsvc:", user)) == key_slot(recent_key("recsvc:", user))
    counter_slots = {key_slot(f"recsvc:cz:bandit:ts:i{n}|region=US") for n in range(1000)}
    assert len(counter_slots) > 900  # spread by item: no hot slot
    for slot in (0, 1, 5000, 16383):
        assert key_slot("recsvc:ok:{" + slot_tag(slot) + "}event-1") == slot


def test_store_opens_while_the_cluster_is_down_and_says_unavailable() -> None:
    from tests.fixtures.redis_cluster import cluster_ports

    url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster_ports(2))
    store = open_store(url, connect_timeout_s=0.2)
    try:
        assert isinstance(store, RedisClusterStore)
        start = time.monotonic()
        with pytest.raises(FeatureStoreUnavailable):
            store.read_user("u1")
        with pytest.raises(FeatureStoreUnavailable):
            store.record_events([StoredEvent("e1", "u1", "i1", "click", 1)])
        assert time.monotonic() - start < 3.0
    finally:
        store.close()


def test_partial_batch_is_completed_by_sending_it_again(
    redis_cluster: RedisCluster, redis_cluster_prefix: str
) -> None:
    """A batch whose parts reached some slots only (a node died in between) is completed by
    sending it again: each slot's part is gated by its own marker, so nothing counts twice."""
    import redis

    store = open_store(redis_cluster.url, prefix=redis_cluster_prefix, socket_timeout_s=2.0)
    assert isinstance(store, RedisClusterStore)
    events = [StoredEvent(f"e{n}", f"u{n % 3}", "i1", "click", n) for n in range(6)]
    deltas = [
        [CounterDelta(f"k{n % 4}", "n", 1.0), CounterDelta("hot", "n", 1.0)] for n in range(6)
    ]
    try:
        assert store.record_events(events[:2], deltas[:2]) == [True, True]
        # What a batch cut short leaves: the counter parts of e2..e5 applied, nothing else.
        log_slot = key_slot(redis_cluster_prefix + "log:event")
        for n in range(2, 6):
            user_slot = key_slot(recent_key(redis_cluster_prefix, events[n].user_id))
            for delta in deltas[n]:
                counter = redis_cluster_prefix + "cz:" + delta.key
                slot = key_slot(counter)
                if slot in (log_slot, user_slot):
                    continue  # that part shares its marker with the log's or the user's part
                marker = redis_cluster_prefix + "ok:{" + slot_tag(slot) + "}" + f"e{n}"
                node = store._address(slot)
                client = redis.Redis(host="127.0.0.1", port=int(node.rsplit(":", 1)[1]))
                try:
                    client.zincrby(counter, 1.0, "n")
                    client.set(marker, "1", ex=60)
                finally:
                    client.close()
        assert store.record_events(events, deltas) == [False, False, True, True, True, True]
        counters = store.get_counters(["k0", "k1", "k2", "k3", "hot"])
        assert counters == {
            "k0": {"n": 2.0}, "k1": {"n": 2.0}, "k2": {"n": 1.0}, "k3": {"n": 1.0},
            "hot": {"n": 6.0},
        }  # fmt: skip
        assert [r["event_id"] for r in store.read_log("event")] == [f"e{n}" for n in range(6)]
        assert [e.event_id for e in store.read_user("u2")[0].recent_events] == ["e5", "e2"]
    finally:
        store.close()


def test_master_killed_under_load_loses_nothing_acknowledged(
    redis_cluster: RedisCluster, redis_cluster_prefix: str
) -> None:
    """Kill the master that holds the event log's slot while threads write events and read
    users: every call works or raises FeatureStoreUnavailable within its bound, writes
    resume after the replica's promotion without touching the store object, and every
    event acknowledged before, during and after is there exactly once afterwards."""
    store = open_store(
        redis_cluster.url, prefix=redis_cluster_prefix, socket_timeout_s=0.5,
        connect_timeout_s=0.2, wait_replicas=1, wait_timeout_ms=200,
    )  # fmt: skip
    assert isinstance(store, RedisClusterStore)
    log_node = store._address(key_slot(redis_cluster_prefix + "log:event"))
    victim = int(log_node.rsplit(":", 1)[1])
    stop = threading.Event()
    lock = threading.Lock()
    acked: dict[str, float] = {}  # event id -> when acknowledged
    stats: dict[str, Any] = {"unavailable": 0, "reads_ok_sync": 0, "reads_ok_async": 0,
                             "reads_down": 0, "other": [], "slowest": 0.0}  # fmt: skip

    def timed(fn: Any) -> Any:
        start = time.monotonic()
        try:
            return fn()
        finally:
            with lock:
                stats["slowest"] = max(stats["slowest"], time.monotonic() - start)

    def writer(w: int) -> None:
        n = 0
        while not stop.is_set():
            ev = StoredEvent(f"w{w}-{n}", f"u{n % 40}", f"i{n % 7}", "click", n)
            delta = [CounterDelta(f"k{n % 10}", "n", 1.0)]
            for _ in range(500):  # until acknowledged, even after stop: no half-sent event
                try:
                    timed(lambda ev=ev, delta=delta: store.record_events([ev], [delta]))
                except FeatureStoreUnavailable:
                    with lock:
                        stats["unavailable"] += 1
                    time.sleep(0.02)  # the client retries the same event id
                    continue
                except BaseException as exc:
                    stats["other"].append(repr(exc))
                    return
                acked[ev.event_id] = time.monotonic()
                break
            n += 1

    def reader() -> None:
        """Sync and asyncio reads in turn (the server uses the latter)."""
        rng = random.Random(0)
        loop = asyncio.new_event_loop()
        n = 0
        try:
            while not stop.is_set():
                n += 1
                user, keys = f"u{rng.randrange(40)}", ["k1", "k2", "k3"]
                mode = "async" if n % 2 else "sync"
                try:
                    if mode == "async":
                        read = store.read_user_async(user, keys)
                        timed(functools.partial(loop.run_until_complete, read))
                    else:
                        timed(functools.partial(store.read_user, user, keys))
                    key = f"reads_ok_{mode}"
                except FeatureStoreUnavailable:
                    key = "reads_down"
                except BaseException as exc:
                    stats["other"].append(repr(exc))
                    return
                with lock:
                    stats[key] = stats.get(key, 0) + 1
                time.sleep(0.002)
        finally:
            loop.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    threads.append(threading.Thread(target=reader))
    try:
        for th in threads:
            th.start()
        time.sleep(1.0)
        before = len(acked)
        killed_at = time.monotonic()
        redis_cluster.kill(victim)
        deadline = killed_at + 20.0
        while time.monotonic() < deadline:  # until writes have flowed again for a while
            resumed = [t for t in list(acked.values()) if t > killed_at + 0.2]
            if len(resumed) >= 50:
                break
            time.sleep(0.1)
        reads_after = (stats["reads_ok_sync"], stats["reads_ok_async"])
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=10)
    try:
        assert stats["other"] == []
        assert before > 20, "no load before the kill"
        resumed = sorted(t for t in acked.values() if t > killed_at + 0.2)
        assert len(resumed) >= 50, f"writes did not resume ({stats})"
        assert resumed[0] - killed_at < 15.0
        assert stats["reads_ok_sync"] > reads_after[0]  # reads back too
        assert stats["reads_ok_async"] > reads_after[1]
        assert stats["slowest"] < 3.0
        assert victim not in redis_cluster.masters_ports()  # a replica took over
        assert store.unreplicated_writes > 0  # the promoted replica had no replica yet
        # Every acknowledged event is there, exactly once.
        logged = [row["event_id"] for row in store.read_log("event")]
        assert len(logged) == len(set(logged))
        missing = set(acked) - set(logged)
        assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:5]}"
        counters = store.get_counters([f"k{k}" for k in range(10)])
        assert sum(c.get("n", 0.0) for c in counters.values()) == len(logged)
    finally:
        store.close()
        redis_cluster.restart(victim)  # rejoins as a replica: the session's cluster heals
        redis_cluster.wait_healthy()


@pytest.mark.slow
def test_tls_and_password_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_cluster: RedisCluster
) -> None:
    """``rediss+cluster://:PASSWORD@SEEDS``: every call over TLS with AUTH (a cluster whose
    nodes speak only TLS, bus and replication included); a wrong password or plain TCP is
    FeatureStoreUnavailable, not a hang or a crash."""
    del redis_cluster  # needs the binaries the session cluster checked for
    from tests.fixtures.redis_cluster import make_tls_files

    tls = make_tls_files(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(tls / "ca.crt"))  # trust the test CA
    cluster = RedisCluster(tmp_path / "nodes", tls_dir=tls, password="s3cret")
    try:
        cluster.start()
        store = open_store(cluster.url + "?prefix=tls:", socket_timeout_s=2.0)
        assert isinstance(store, RedisClusterStore) and store._tls
        assert "s3cret" not in repr(store)
        try:
            store.write_user_profiles([("u1", {"region": "US"})])
            events = [StoredEvent(f"e{n}", "u1", f"i{n}", "click", n, f"r{n}") for n in range(5)]
            deltas = [[CounterDelta(f"k{n}", "n", 1.0)] for n in range(5)]
            assert store.record_events(events, deltas) == [True] * 5
            assert store.record_events(events[:1], deltas[:1]) == [False]
            state, counters = store.read_user("u1", [f"k{n}" for n in range(5)])
            assert state.profile == {"region": "US"}
            assert [e.event_id for e in state.recent_events] == [f"e{n}" for n in range(4, -1, -1)]
            assert counters == {f"k{n}": {"n": 1.0} for n in range(5)}
            state_async, _ = asyncio.run(store.read_user_async("u1"))  # inline over TLS
            assert state_async.profile == {"region": "US"}
            assert [r["event_id"] for r in store.read_log("event")] == [f"e{n}" for n in range(5)]
            store.put_document("exp", "a", {"x": 1})
            assert store.get_document("exp", "a") == {"x": 1}
            assert store.ping() > 0
        finally:
            store.close()
        for url in (
            cluster.url.replace("s3cret", "wrong") + "?prefix=tls:",
            cluster.url.replace("rediss+", "redis+") + "?prefix=tls:",
        ):
            bad = open_store(url, socket_timeout_s=0.5, connect_timeout_s=0.5)
            try:
                with pytest.raises(FeatureStoreUnavailable) as info:
                    bad.read_user("u1")
                assert "wrong" not in str(info.value) and "s3cret" not in str(info.value)
            finally:
                bad.close()
    finally:
        cluster.stop()


def test_every_key_an_event_leaves_is_bounded(
    redis_cluster: RedisCluster, redis_cluster_prefix: str
) -> None:
    """Memory bounded as on one node: markers and recent lists expire, counters expire when
    counters_ttl_s is set, the log is one trimmed stream; nothing else is written."""
    import redis

    store = open_store(
        redis_cluster.url, prefix=redis_cluster_prefix, socket_timeout_s=2.0,
        event_id_ttl_s=600, recent_events_ttl_s=300, counters_ttl_s=900,
    )  # fmt: skip
    try:
        events = [StoredEvent(f"e{n}", f"u{n % 5}", f"i{n}", "click", n) for n in range(20)]
        deltas = [[CounterDelta(f"ts:i{n}", "n", 1.0), CounterDelta("ts:all", "n", 1.0)]
                  for n in range(20)]  # fmt: skip
        assert store.record_events(events, deltas) == [True] * 20
        kinds: dict[str, list[int]] = {}
        for port in redis_cluster.masters_ports():
            client = redis.Redis(port=port)
            try:
                for key in client.scan_iter(match=redis_cluster_prefix + "*", count=1000):
                    kind = key.decode()[len(redis_cluster_prefix) :].split(":", 1)[0]
                    kinds.setdefault(kind, []).append(client.ttl(key))
            finally:
                client.close()
        assert set(kinds) == {"schema", "log", "r", "cz", "ok"}
        assert all(0 < ttl <= 600 for ttl in kinds["ok"])
        p = redis_cluster_prefix
        parts = sum(  # one marker per slot an event touches: the log's, the user's, counters'
            len({key_slot(p + "log:event"), key_slot(recent_key(p, e.user_id)),
                 *(key_slot(p + "cz:" + d.key) for d in ds)})
            for e, ds in zip(events, deltas, strict=True)
        )  # fmt: skip
        assert len(kinds["ok"]) == parts
        assert all(0 < ttl <= 300 for ttl in kinds["r"])
        assert all(0 < ttl <= 900 for ttl in kinds["cz"])
        assert kinds["log"] == [-1] and kinds["schema"] == [-1]  # trimmed, not expired
    finally:
        store.close()


def test_a_write_no_replica_confirmed_is_not_acknowledged(
    redis_cluster: RedisCluster, redis_cluster_prefix: str
) -> None:
    """WAIT 1 is what "accepted" means: with the log master's replica paused, the write
    raises FeatureStoreUnavailable (not acknowledged, so a failover then loses nothing
    acknowledged) where ``wait_replicas=0`` acknowledges it on the master alone; resending
    the unacknowledged event after the replica is back records it once."""
    import signal

    url, prefix = redis_cluster.url, redis_cluster_prefix
    store = open_store(url, prefix=prefix, socket_timeout_s=1.0, wait_timeout_ms=200)
    nowait = open_store(url, prefix=prefix, socket_timeout_s=1.0, wait_replicas=0)
    assert isinstance(store, RedisClusterStore)
    master = int(store._address(key_slot(prefix + "log:event")).rsplit(":", 1)[1])
    replica = redis_cluster.procs[redis_cluster.replica_of(master)]
    events = [StoredEvent(f"e{n}", "u1", "i1", "click", n) for n in range(3)]
    try:
        assert store.record_events(events[:1]) == [True]
        replica.send_signal(signal.SIGSTOP)  # connected, but confirms nothing (< node timeout)
        try:
            start = time.monotonic()
            with pytest.raises(FeatureStoreUnavailable, match="replicas within 200 ms"):
                store.record_events(events[1:2])
            assert time.monotonic() - start < 1.0
            assert nowait.record_events(events[2:]) == [True]
        finally:
            replica.send_signal(signal.SIGCONT)
        assert store.record_events(events[1:2]) == [False]  # it was applied: counted once
        assert [r["event_id"] for r in store.read_log("event")] == ["e0", "e1", "e2"]
        assert store.unreplicated_writes == 0  # the master had its replica connected
    finally:
        store.close()
        nowait.close()
        redis_cluster.wait_healthy()


def test_reads_and_writes_follow_a_slot_being_migrated(
    redis_cluster: RedisCluster, redis_cluster_prefix: str
) -> None:
    """A user's slot moved to another master while the store is in use: during the move
    (ASK: the keys already on the target) and after it (MOVED, the store's map stale) reads
    give the same answer, sync and async. An event write to the moving slot is refused
    meanwhile (Redis answers TRYAGAIN to a multi-key script there: the new marker is
    missing), and sending it again after the move completes it, counted once."""
    import redis

    prefix = redis_cluster_prefix
    store = open_store(redis_cluster.url, prefix=prefix, socket_timeout_s=2.0)
    assert isinstance(store, RedisClusterStore)
    user, keys = "u-moving", [f"k{n}" for n in range(12)]
    mid = StoredEvent("m-mid", user, "i9", "click", 9)
    try:
        store.write_user_profiles([(user, {"region": "EU"})])
        store.record_events([StoredEvent(f"m{n}", user, f"i{n}", "click", n) for n in range(3)])
        store.incr_counters([CounterDelta(k, "n", 1.0) for k in keys])
        before = store.read_user(user, keys)
        asyncio.run(store.read_user_async(user, keys))  # opens the async connections

        def same(got: Any) -> None:
            assert dict(got[0].profile) == dict(before[0].profile)
            assert list(got[0].recent_events) == list(before[0].recent_events)
            assert got[1] == before[1]

        slot = key_slot(profile_key(prefix, user))
        src = int(store._address(slot).rsplit(":", 1)[1])
        masters = redis_cluster.masters_ports()
        dst = next(p for p in masters if p != src)
        clients = {p: redis.Redis(port=p, socket_timeout=5) for p in masters}
        ids = {p: c.execute_command("CLUSTER", "MYID") for p, c in clients.items()}
        ids = {p: i.decode() if isinstance(i, bytes) else i for p, i in ids.items()}
        try:
            clients[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
            clients[src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
            moving = clients[src].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            assert recent_key(prefix, user).encode() in moving
            clients[src].execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *moving)
            same(store.read_user(user, keys))  # ASK for the user's two keys
            same(asyncio.run(store.read_user_async(user, keys)))
            with pytest.raises(FeatureStoreUnavailable, match=r"TRYAGAIN|ASK"):
                store.record_events([mid])
        finally:  # the move completed on every master, whatever happened above
            for port in masters:
                clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
            for client in clients.values():
                client.close()
        assert store._address(slot).endswith(f":{src}")  # stale until a MOVED says otherwise
        same(store.read_user(user, keys))
        assert store._address(slot).endswith(f":{dst}")
        # The refused write had logged the event (the log's slot did not move): sent again,
        # it is "seen", and the user's part, refused before, is applied now.
        assert store.record_events([mid]) == [False]
        assert store.record_events([mid]) == [False]
        ids_now = ["m-mid", "m2", "m1", "m0"]
        assert [e.event_id for e in store.read_user(user)[0].recent_events] == ids_now
        state, counters = asyncio.run(store.read_user_async(user, keys))
        assert [e.event_id for e in state.recent_events] == ids_now
        assert counters == before[1]
        assert [r["event_id"] for r in store.read_log("event")].count("m-mid") == 1
    finally:
        store.close()


def test_fan_out_failure_leaves_no_unread_reply_behind(tmp_path: Path) -> None:
    """``resp.round_trips`` (the cluster read's fan-out) writes every server's request before
    reading any: when one server fails, the others' replies may be unread, so their sockets
    must not be reused. A hung server (read timeout) and a dead one (refused connect)."""
    import signal

    import redis

    from feature_store.resp import RespConnections, pack_command, round_trips
    from tests.fixtures.redis_server import ThrowawayRedis

    servers = [ThrowawayRedis(workdir=tmp_path), ThrowawayRedis(workdir=tmp_path)]
    for server in servers:
        server.start()
    try:
        hung, ok = (
            RespConnections("127.0.0.1", s.port, connect_timeout_s=0.5, socket_timeout_s=0.3,
                            limit=2)
            for s in servers
        )  # fmt: skip
        sets = [(c, pack_command(b"SET", b"a", b"1") + pack_command(b"SET", b"b", b"2"), 2)
                for c in (hung, ok)]  # fmt: skip
        assert round_trips(sets) == [["OK", "OK"], ["OK", "OK"]]
        get_a, get_b = pack_command(b"GET", b"a"), pack_command(b"GET", b"b")
        wrong = pack_command(b"HGETALL", b"a")  # an error reply is returned, not raised
        (error,), (value,) = round_trips([(hung, wrong, 1), (ok, get_a, 1)])
        assert isinstance(error, Exception) and "WRONGTYPE" in str(error) and value == "1"
        assert servers[0].proc is not None
        servers[0].proc.send_signal(signal.SIGSTOP)
        with pytest.raises(redis.TimeoutError):
            round_trips([(hung, get_a, 1), (ok, get_a, 1)])  # ok's "1" left unread
        assert round_trips([(ok, get_b, 1)]) == [["2"]]  # not the stale "1"
        servers[0].proc.send_signal(signal.SIGCONT)
        servers[0].kill()
        with pytest.raises(redis.ConnectionError):
            round_trips([(ok, get_a, 1), (hung, get_a, 1)])  # ok written, then refused
        assert round_trips([(ok, get_b, 1)]) == [["2"]]
    finally:
        for server in servers:
            server.kill()
