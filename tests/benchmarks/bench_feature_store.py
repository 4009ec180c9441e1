"""Feature-store benchmark: the per-request read and event write throughput, SQLite, one
Redis and a Redis Cluster (3 masters + 3 replicas on this machine), and the cluster's
memory per user and per item counter at 1M users.

Data: MovieLens ``ml-latest-small`` ratings from $SHARED_DATA replayed as events (~610
users, rating >= 4 → click, else impression), users' recent lists filled to the cap,
bandit counters (4 fields) for every movie.

1. Per-request read = ``read_user(user, counter_keys)``: profile + recent events + counter
   hashes of 20 items, on SQLite and Redis, interleaved with a bare Redis PING (redis-py
   ``client.ping()``, the store's own pool) in the same loop, so machine noise hits all
   alike. Also: a PING on the read path's own socket (no redis-py at all: the floor), the
   Redis wire part alone (the one pipelined round trip, replies parsed), and each read
   followed by touching every recent event (what fold-in does: the lazily decoded
   ``StoredEvent``s get built). Swept over 10/50/100 recent events.
   TARGET: Redis read p50 ≤ 2× PING p50 (at 50 recent events, 20 items).
   The same read on the Redis Cluster (``redis+cluster://``) and on a private one-node
   ``redis-server`` started like the cluster's nodes, in the same loop.
   TARGET: cluster read p50 ≤ 1.5× the (private) one-node read p50.
2. Event write throughput: ``record_events`` (idempotency check, recent list with its trim,
   event log, one counter delta per event) in batches of 1/10/100/500 events, events/s, for
   the MovieLens users (steady state: their lists are mostly full); on the cluster with
   ``WAIT 1`` (the default: acknowledged once a replica has it) and without.
3. Cluster memory: 1M users (profile of 3 features + 10 recent events each) and 100k item
   counters (4 fields) written straight into the cluster's keys; ``used_memory`` summed over
   the masters before and after, per user and per counter; and per recorded event (its
   markers, log row and recent entry).

The cluster is started on free localhost ports (``tests/fixtures/redis_cluster.py``) and
stopped at the end, unless ``--cluster-url`` names one (keys under a unique prefix).

``python -m tests.benchmarks.bench_feature_store [--quick]``; raw results and the plot go to
$BENCH_OUT/feature_store/; a full run rewrites docs/benchmarks/feature_store.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from feature_store import CounterDelta, OnlineStore, StoredEvent, open_store
from feature_store.redis import RedisStore, _user_state, profile_key, recent_key
from feature_store.redis_cluster import RedisClusterStore, key_slot
from feature_store.resp import pack_command, round_trips

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "benchmarks" / "feature_store.md"
COUNTER_FIELDS = ("impressions", "clicks", "alpha", "beta")
ITEMS_PER_REQUEST = 20
TARGET_RATIO = 2.0
TARGET_EVENTS = 50
TARGET_CLUSTER = 1.5
MEMORY_RECENT = 10
MEMORY_ITEMS = 100_000
PING = pack_command(b"PING")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sample counts (smoke run)")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("RECSVC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="Redis to measure (keys under a unique prefix, deleted afterwards)",
    )
    parser.add_argument(
        "--cluster-url",
        default=os.environ.get("RECSVC_BENCH_CLUSTER_URL", ""),
        help="Redis Cluster to measure (default: start 3 masters + 3 replicas locally)",
    )
    parser.add_argument(
        "--memory-users", type=int, default=None, help="users of the memory part (1M)"
    )
    parser.add_argument("--samples", type=int, default=None, help="reads per point")
    parser.add_argument(
        "--parts",
        default="reads,writes,memory",
        help="comma-separated subset of reads,writes,memory (the doc is rewritten only when "
        "all three ran, without --quick)",
    )
    parser.add_argument(
        "--caps", default="10,50,100", help="recent-event caps of the read part (comma-separated)"
    )
    return parser.parse_args(argv)


def load_events(shared: Path, limit: int | None) -> list[StoredEvent]:
    path = shared / "ml-latest-small" / "ratings.csv"
    if not path.exists():
        raise SystemExit(f"bench_feature_store: {path} not found (set SHARED_DATA)")
    ratings = pd.read_csv(path, nrows=limit).sort_values("timestamp", kind="stable")
    return [
        StoredEvent(
            event_id=f"ml-{n}",
            user_id=f"u{u}",
            item_id=f"m{m}",
            type="click" if r >= 4 else "impression",
            timestamp_ms=int(ts) * 1000,
            request_id=f"req-{n // 10}",
            variant_id=f"v{m % 3}",
        )
        for n, (u, m, r, ts) in enumerate(
            zip(ratings.userId, ratings.movieId, ratings.rating, ratings.timestamp, strict=True)
        )
    ]


def counter_key(item: str) -> str:
    return f"bandit:ts:{item}:ctx-all"


def populate(store: OnlineStore, events: list[StoredEvent], items: list[str]) -> None:
    users = sorted({e.user_id for e in events})
    store.write_user_profiles(
        (u, {"region": f"R{hash(u) % 7}", "age": "25-34", "device": "tv"}) for u in users
    )
    store.record_events(events)
    store.incr_counters(
        [
            CounterDelta(counter_key(i), f, float(k + 1))
            for i in items
            for k, f in enumerate(COUNTER_FIELDS)
        ]
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def bench_reads(
    stores: dict[str, OnlineStore],
    redis_store: RedisStore,
    users: list[str],
    items: list[str],
    samples: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Interleave every measured call per sample; p50/p99 in µs."""
    rng = random.Random(seed)
    client = redis_store._client
    calls: dict[str, Callable[[str, list[str]], Any]] = {
        "redis_ping": lambda u, k: client.ping(),
        "raw_ping": lambda u, k: redis_store._round_trip(PING, 1),
        "redis_wire": lambda u, k: redis_wire(redis_store, u, k),
    }
    for name in ("redis", "private", "cluster"):  # the user alone: one node on each
        if name in stores:
            calls[f"{name}_user"] = functools.partial(read_user_only, stores[name])
    for name, store in stores.items():
        calls[f"{name}_read"] = store.read_user
        calls[f"{name}_read_events"] = functools.partial(read_and_touch, store)
    loop = asyncio.new_event_loop()
    timed: dict[str, Callable[[str, list[str]], float]] = {}
    private, cluster = stores.get("private"), stores.get("cluster")
    if isinstance(private, RedisStore) and isinstance(cluster, RedisClusterStore):
        calls["private_raw_ping"] = lambda u, k: private._round_trip(PING, 1)
        masters = [cluster._node(a) for a in cluster.masters()]
        calls["cluster_fanout_ping"] = functools.partial(
            fanout_ping, [(conns, PING, 1) for conns in masters]
        )
        redispy = redispy_cluster(cluster)
        calls["cluster_redispy_read"] = functools.partial(redispy_read, redispy, cluster)
        for name, store in (("private", private), ("cluster", cluster)):
            timed[f"{name}_async_read"] = functools.partial(read_async, loop, store)
    times: dict[str, list[float]] = {name: [] for name in [*calls, *timed]}
    for i in range(samples + samples // 10):
        user = rng.choice(users)
        keys = [counter_key(x) for x in rng.sample(items, ITEMS_PER_REQUEST)]
        order = [(name, call, False) for name, call in calls.items()]
        order += [(name, call, True) for name, call in timed.items()]
        rng.shuffle(order)
        for name, call, times_itself in order:
            start = time.perf_counter()
            result = call(user, keys)
            elapsed = result if times_itself else time.perf_counter() - start
            if i >= samples // 10:  # the first 10% warm caches and pools
                times[name].append(elapsed)
    if "cluster_redispy_read" in calls:
        redispy.close()
    loop.close()
    return {
        name: {"p50_us": pct(v, 0.5), "p99_us": pct(v, 0.99), "n": len(v)}
        for name, v in times.items()
    }


def redis_wire(store: RedisStore, user: str, keys: list[str]) -> list[Any]:
    """The read's network part alone: the same packed commands, replies parsed by hiredis
    (maps, (field, score) pairs, JSON strings), no ``UserState`` built."""
    packed = store._read_commands(user, keys)
    return store._round_trip(b"".join(packed), len(packed))


def read_async(
    loop: asyncio.AbstractEventLoop, store: OnlineStore, user: str, keys: list[str]
) -> float:
    """Seconds of one ``read_user_async`` awaited inside a running loop (as the gRPC server
    does), without the cost of entering the loop."""

    async def timed() -> float:
        start = time.perf_counter()
        await store.read_user_async(user, keys)
        return time.perf_counter() - start

    return loop.run_until_complete(timed())


def fanout_ping(requests: list[Any], user: str, keys: list[str]) -> Any:
    """One PING to every master, all written before any reply is read: the floor of a read
    that touches every node (as the full read does), on the read path's own sockets."""
    return round_trips(requests)


def redispy_cluster(store: RedisClusterStore) -> Any:
    """redis-py's own cluster client on the same cluster, RESP3 as the store's sockets."""
    import redis

    host, port = store.seeds[0]
    return redis.RedisCluster(host=host, port=port, protocol=3, decode_responses=True)


def redispy_read(client: Any, store: RedisClusterStore, user: str, keys: list[str]) -> Any:
    """The store's read through redis-py's cluster pipeline: the same 22 commands, the same
    answer built from the replies (``_user_state``), the routing and the per-node fan-out
    done by redis-py."""
    prefix = store.prefix
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(profile_key(prefix, user))
    pipe.lrange(recent_key(prefix, user), 0, store.settings.recent_events_cap - 1)
    for key in keys:
        pipe.zrange(prefix + "cz:" + key, 0, -1, withscores=True)
    return _user_state(user, keys, pipe.execute())


def read_user_only(store: OnlineStore, user: str, keys: list[str]) -> Any:
    """Profile + recent events without counters: one node on a cluster too."""
    return store.read_user(user)


def read_and_touch(store: OnlineStore, user: str, keys: list[str]) -> int:
    """``read_user`` plus reading ``item_id``/``type`` of every recent event, as fold-in
    does: the honest cost when the lazily decoded events are used."""
    state, _ = store.read_user(user, keys)
    return sum(1 for e in state.recent_events if e.type != "impression" and e.item_id)


def bench_writes(
    make: Callable[[], OnlineStore],
    batch: int,
    n_events: int,
    tag: str,
    users: list[str],
    items: list[str],
) -> float:
    """Fresh events of the MovieLens users, whose recent lists are mostly at the cap already:
    the steady state, where every new event also trims the oldest one."""
    rng = random.Random(batch)
    store = make()
    try:
        events = [
            StoredEvent(
                f"{tag}-{batch}-{k}",
                rng.choice(users),
                rng.choice(items),
                "impression",
                k,
                f"r{k}",
                "v1",
            )
            for k in range(n_events)
        ]
        deltas = [[CounterDelta(counter_key(e.item_id), "impressions", 1.0)] for e in events]
        start = time.perf_counter()
        for s in range(0, n_events, batch):
            store.record_events(events[s : s + batch], deltas[s : s + batch])
        return n_events / (time.perf_counter() - start)
    finally:
        store.close()


def plot(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted(int(k) for k in results["reads"])
    for name, style in (
        ("redis_ping", "k--"),
        ("raw_ping", "k:"),
        ("redis_wire", "c:"),
        ("redis_read", "r-o"),
        ("redis_read_events", "r--"),
        ("sqlite_read", "b-s"),
        ("sqlite_read_events", "b--"),
        ("private_read", "g-v"),
        ("cluster_read", "m-^"),
        ("cluster_redispy_read", "m:"),
    ):
        ax1.plot(
            sizes,
            [results["reads"][str(n)][name]["p50_us"] for n in sizes],
            style,
            label=name.replace("_", " "),
        )
    ax1.set(
        xlabel="recent events per user",
        ylabel="p50 µs per request",
        title=f"read_user (+{ITEMS_PER_REQUEST} counter keys)",
    )
    ax1.legend()
    batches = sorted(int(k) for k in results["writes"]["redis"])
    writers = (
        ("redis", "r-o"),
        ("private", "g-v"),
        ("sqlite", "b-s"),
        ("cluster", "m-^"),
        ("cluster_nowait", "m:"),
    )
    for name, style in writers:
        ax2.plot(batches, [results["writes"][name][str(b)] for b in batches], style, label=name)
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="events per record_events call",
        ylabel="events/s",
        title="record_events throughput",
    )
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    given = list(argv) if argv is not None else sys.argv[1:]
    args = parse_args(given)
    # SIGTERM unwinds like Ctrl-C, so the finally below stops the cluster it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    shared = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
    out = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")) / "feature_store"
    out.mkdir(parents=True, exist_ok=True)
    samples = args.samples or (500 if args.quick else 5000)
    parts = set(args.parts.split(","))
    load_start = round(os.getloadavg()[0], 1)
    if not parts <= {"reads", "writes", "memory"}:
        raise SystemExit(f"bench_feature_store: --parts {args.parts!r}: reads, writes, memory")
    n_writes = 2000 if args.quick else 20000
    events = load_events(shared, 20000 if args.quick else None)
    items = sorted({e.item_id for e in events})
    users = sorted({e.user_id for e in events})
    prefix = f"bench-fs-{uuid.uuid4().hex[:8]}:"
    tmp = Path(tempfile.mkdtemp(prefix="bench-fs-"))
    opened: list[OnlineStore] = []
    # A one-node Redis started like the cluster's nodes (fresh, private, same traffic share):
    # the fair baseline of the cluster target. The shared Redis above also serves every other
    # call of the loop (and other work), which keeps its process hot.
    from tests.fixtures.redis_server import ThrowawayRedis

    private = ThrowawayRedis(workdir=tmp)
    private.start()
    local_cluster = None
    cluster_url = args.cluster_url
    if not cluster_url:
        from tests.fixtures.redis_cluster import RedisCluster

        local_cluster = RedisCluster(tmp / "cluster")
        try:
            local_cluster.start()
        except BaseException:
            local_cluster.stop()
            private.kill()
            raise
        cluster_url = local_cluster.url

    def make(backend: str, **settings: Any) -> OnlineStore:
        # generous timeouts: this measures latency; fail-fast is the tests' business
        extra: dict[str, Any] = {"prefix": prefix, "socket_timeout_s": 5.0}
        if backend == "sqlite":
            url, extra = f"sqlite:///{tmp / 'store.sqlite'}", {}
        elif backend == "redis":
            url = args.redis_url
        elif backend == "private":
            url = private.url
        else:
            url = cluster_url
            # bulk batches outrun a replica on a loaded box: wait for it rather than fail
            extra["wait_timeout_ms"] = 5000
            if backend == "cluster_nowait":
                extra["wait_replicas"] = 0
        store = open_store(url, **extra, **settings)
        opened.append(store)
        return store

    writers = ("sqlite", "redis", "private", "cluster", "cluster_nowait")
    results: dict[str, Any] = {"reads": {}, "writes": {b: {} for b in writers}}
    try:
        readers = ("sqlite", "redis", "private", "cluster")
        for backend in readers:
            populate(make(backend), events, items)
        for cap in [int(c) for c in args.caps.split(",")] if "reads" in parts else []:
            stores = {b: make(b, recent_events_cap=cap) for b in readers}
            redis_store = stores["redis"]
            assert isinstance(redis_store, RedisStore)
            results["reads"][str(cap)] = bench_reads(
                stores, redis_store, users, items, samples, seed=cap
            )
            row = results["reads"][str(cap)]
            print(
                f"recent={cap}: "
                + ", ".join(
                    f"{k} p50 {v['p50_us']:.0f}µs p99 {v['p99_us']:.0f}µs" for k, v in row.items()
                ),
                flush=True,
            )
        for batch in (1, 10, 100, 500) if "writes" in parts else ():
            for backend in writers:
                n = min(n_writes, batch * 2000) if batch > 1 else n_writes // 4
                make_one = functools.partial(make, backend)
                rate = bench_writes(make_one, batch, n, f"w{backend}", users, items)
                results["writes"][backend][str(batch)] = rate
                print(f"write {backend} batch={batch}: {rate:,.0f} events/s", flush=True)
        if "memory" in parts:
            memory_users = args.memory_users or (50_000 if args.quick else 1_000_000)
            cluster = make("cluster")
            assert isinstance(cluster, RedisClusterStore)
            results["memory"] = bench_memory(cluster, memory_users, users, items)
            print(f"memory: {results['memory']}", flush=True)
    finally:
        for store in opened:
            store.close()
        cleanup(args.redis_url, prefix)
        private.kill()
        if local_cluster is not None:
            local_cluster.stop()
        else:
            cleanup_cluster(cluster_url, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"] = {
        "command": " ".join(["python -m tests.benchmarks.bench_feature_store", *given]),
        "loadavg_start": load_start,
        "samples": samples,
        "events_loaded": len(events),
        "users": len(users),
        "items": len(items),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "hiredis": hiredis_version(),
        "loadavg": round(os.getloadavg()[0], 1),
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if "reads" not in parts:
        return 0
    r = target_ratios(results)
    print(
        f"TARGET Redis read p50 ≤ {TARGET_RATIO}× PING p50: read {r['read']:.2f}× "
        f"→ {'met' if r['read'] <= TARGET_RATIO else 'MISSED'} (read + touching events "
        f"{r['read_events']:.2f}×; vs the raw-socket PING {r['read_raw']:.2f}×)"
    )
    print(
        f"TARGET cluster read p50 ≤ {TARGET_CLUSTER}× one-node read p50: {r['cluster']:.2f}× "
        f"→ {'met' if r['cluster'] <= TARGET_CLUSTER else 'MISSED'} (async read "
        f"{r['cluster_async']:.2f}×, user only {r['cluster_user']:.2f}×; the 3-node PING "
        f"fan-out / one PING {r['fanout_floor']:.2f}×; redis-py's cluster pipeline / the "
        f"store's read {r['cluster_redispy']:.2f}×)"
    )
    if not args.quick and len(parts) == 3:
        plot(results, out / "feature_store.png")
        DOC.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "feature_store.png", DOC.parent / "feature_store.png")
        DOC.write_text(write_up(results))
        print(f"wrote {DOC}")
    return 0


def redis_version() -> str:
    import redis

    return str(redis.__version__)


def hiredis_version() -> str:
    try:
        import hiredis

        return str(hiredis.__version__)
    except ImportError:
        return "not installed (pure-Python RESP parser)"


def cleanup(url: str, prefix: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for s in range(0, len(keys), 1000):
            client.delete(*keys[s : s + 1000])
    except redis.RedisError as exc:
        print(f"bench_feature_store: cleanup of {prefix}* failed: {exc}", file=sys.stderr)


def cleanup_cluster(url: str, prefix: str) -> None:
    import redis

    try:
        client = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1))
        for key in client.scan_iter(match=prefix + "*", count=1000, target_nodes="primaries"):
            client.unlink(key)
        client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        print(f"bench_feature_store: cluster cleanup of {prefix}* failed: {exc}", file=sys.stderr)


def used_memory(store: RedisClusterStore) -> int:
    """``used_memory`` summed over the cluster's masters (the replicas hold as much again)."""
    total = 0
    for address in store.masters():
        (info,) = store._node(address).round_trip(pack_command(b"INFO", b"memory"), 1)
        text = info if isinstance(info, str) else info.decode()
        total += int(text.split("used_memory:", 1)[1].split()[0])
    return total


def bench_memory(
    store: RedisClusterStore, n_users: int, ml_users: list[str], items: list[str]
) -> dict[str, Any]:
    """Bytes per user (profile + MEMORY_RECENT recent events), per item counter (4 fields)
    and per recorded event, from ``used_memory`` over the masters."""
    rng = random.Random(7)
    p = store.prefix
    ttl = str(store.settings.recent_events_ttl_s)

    def load(commands: list[tuple[int, bytes]]) -> None:
        for s in range(0, len(commands), 20_000):
            store._run(commands[s : s + 20_000])

    base = used_memory(store)
    start = time.perf_counter()
    for lo in range(0, n_users, 20_000):
        commands: list[tuple[int, bytes]] = []
        for u in range(lo, min(n_users, lo + 20_000)):
            user = f"mu{u}"
            pk, rk = profile_key(p, user), recent_key(p, user)
            slot = key_slot(pk)
            commands.append((slot, pack_command(b"HSET", pk, b"region", f"R{u % 7}",
                                                b"age", b"25-34", b"device", b"tv")))  # fmt: skip
            recent = [
                json.dumps([f"ev-{u}-{k}", rng.choice(items), "click", 1_700_000_000_000 + k,
                            f"req-{u}-{k}", f"v{k % 3}"], separators=(",", ":"))
                for k in range(MEMORY_RECENT)
            ]  # fmt: skip
            commands.append((slot, pack_command(b"RPUSH", rk, *recent)))
            commands.append((slot, pack_command(b"EXPIRE", rk, ttl)))
        load(commands)
    users_bytes = used_memory(store) - base
    users_s = time.perf_counter() - start
    base = used_memory(store)
    commands = []
    for j in range(MEMORY_ITEMS):
        key = p + "cz:" + counter_key(f"mi{j}")
        args: list[str | bytes] = []
        for k, f in enumerate(COUNTER_FIELDS):
            args += [str(float(rng.randrange(1, 10_000) + k)), f]
        commands.append((key_slot(key), pack_command(b"ZADD", key, *args)))
    load(commands)
    counters_bytes = used_memory(store) - base
    n_events = 20_000
    base = used_memory(store)
    events = [
        StoredEvent(f"mem-{k}", f"mu{rng.randrange(n_users)}", f"mi{k % 1000}", "impression",
                    1_700_000_000_000 + k, f"r{k}", "v1")
        for k in range(n_events)
    ]  # fmt: skip
    deltas = [[CounterDelta(counter_key(e.item_id), "impressions", 1.0)] for e in events]
    for s in range(0, n_events, 500):
        store.record_events(events[s : s + 500], deltas[s : s + 500])
    events_bytes = used_memory(store) - base
    return {
        "users": n_users,
        "recent_per_user": MEMORY_RECENT,
        "bytes_per_user": users_bytes / n_users,
        "users_load_s": users_s,
        "items": MEMORY_ITEMS,
        "bytes_per_item_counter": counters_bytes / MEMORY_ITEMS,
        "events": n_events,
        "bytes_per_event": events_bytes / n_events,
        "masters_used_memory": used_memory(store),
    }


def target_ratios(results: dict[str, Any]) -> dict[str, float]:
    row = results["reads"][str(TARGET_EVENTS)]

    def p50(name: str) -> float:
        return float(row[name]["p50_us"])

    return {
        "read": p50("redis_read") / p50("redis_ping"),
        "read_events": p50("redis_read_events") / p50("redis_ping"),
        "wire": p50("redis_wire") / p50("redis_ping"),
        "read_raw": p50("redis_read") / p50("raw_ping"),
        "sqlite": p50("sqlite_read") / p50("redis_ping"),
        "cluster": p50("cluster_read") / p50("private_read"),
        "cluster_shared": p50("cluster_read") / p50("redis_read"),
        "cluster_ping": p50("cluster_read") / p50("redis_ping"),
        "cluster_user": p50("cluster_user") / p50("private_user"),
        "cluster_async": p50("cluster_async_read") / p50("private_async_read"),
        "cluster_redispy": p50("cluster_redispy_read") / p50("cluster_read"),
        "fanout_floor": p50("cluster_fanout_ping") / p50("private_raw_ping"),
    }


NOTES = """## How to read this

- **PING** is redis-py's `client.ping()` on the store's own pool: one round trip plus
  redis-py's per-command overhead — the baseline the target names, and what any Python
  client of Redis pays per call. **Raw PING** is a PING on the read path's own socket
  (`feature_store/resp.py`, no redis-py): the floor of one round trip from Python. Both
  are in every table so the target can be judged against either.
- **Redis read** is the whole `read_user`: one pipelined round trip (HGETALL profile, LRANGE
  recent, one ZRANGE WITHSCORES per counter key — 22 commands) and the `UserState` and
  counter dicts handed back. **Redis wire** is that round trip alone. **+ events** means
  the read followed by touching `item_id`/`type` of every recent event, as fold-in does.
- What made the read cheaper than before (it was 2.72× PING at 50 events, commit
  fa949c9's run): (1) its own connections — plain sockets, a deque of idle connections,
  hiredis — instead of redis-py's pool checkout (health poll, metrics hooks) and one
  `read_response` per reply; timeouts, retry-once on a broken socket and
  FeatureStoreUnavailable are kept and tested (tests/feature_store/test_store_faults.py,
  test_store_read_connections.py). (2) RESP3 on that connection: the profile arrives as a
  map and counters — now sorted sets, member = field, score = value — as (field, double)
  pairs, so hiredis builds the dicts and floats in C; no Python loop per field. (3) The
  recent events stay as the stored JSON strings until used (`RecentEvents`, a lazy
  immutable sequence, also used by SQLite for its fetched rows);
  `UserState.recent_item_ids()`/`recent_types()` answer without building `StoredEvent`s.
- What did not help: one EVALSHA that gathers everything server-side into one JSON string
  (or RESP3 maps of doubles) — the Lua work in Redis (22 `redis.call`s plus string
  building) costs more than the 22 pipelined commands it replaces (measured 1.3–1.6×
  slower than the plain pipeline). RESP3 through redis-py's connection objects helped,
  but less than the own sockets (redis-py's per-reply Python overhead stays).
- Sorted sets vs hashes for counters: per request, 20 ZRANGE cost Redis ~35% more CPU than
  20 HGETALL (double formatting: ~2.6 vs ~1.9 µs per call in INFO commandstats on this
  box), while the client saves more (~85 vs ~120 µs thread CPU to read 20 counters here);
  wall-clock they were a wash in isolation. They were kept because the sums are then IEEE
  doubles on both backends (HINCRBYFLOAT sums in long double and prints decimals, so
  Redis and SQLite disagreed in the last digit). Counter hashes written by earlier
  versions (`c:` keys) are not read.
- Lazy decoding moves work, it does not remove it: the **+ events** columns are the honest
  cost when every event is used. Callers that need only ids and types should use
  `recent_item_ids()`/`recent_types()`.
- Why the read is still ~4× a raw PING: CPU, not round trips. Measured apart from this
  run (50 events, 20 keys, thread CPU time and INFO commandstats, 3,000 reads, load ~10):
  the client spends ≈ 60 µs per read (packing 5, send/recv ≈ 15, hiredis parsing the
  4.9 KB, ~250-element reply 16, building the answer 6, the rest bookkeeping) against
  17 µs for a raw PING and 47 µs for redis-py's `ping()`; Redis spends ≈ 60 µs of command
  time per read (20 ZRANGE ≈ 49, LRANGE 7, HGETALL 3) against ~0.3 µs for a PING. On a
  loaded box every µs of CPU also waits for a core. No client-side change removes the
  server part; fewer counter keys per request (say one key per item for all its variants
  and buckets, a contract change for the bandit) would.
- SQLite reads are one read transaction (profile by primary key, the user's recent events
  as one clustered range scan, counters with `IN (...)`), on a per-thread connection with
  cached prepared statements; its events are handed over lazily too.
- Writes: Redis runs one Lua script per 50 events (SET NX on the event id gates LPUSH +
  LTRIM + EXPIRE + XADD MAXLEN~ + ZINCRBY, so retries never double count), several
  scripts pipelined per call; SQLite runs one `BEGIN IMMEDIATE` transaction per call with
  `executemany` per table. Batching is what buys throughput on both: one event per call
  pays a full round trip / transaction each.
"""


CLUSTER_NOTES = """
## The cluster, how to read it

- **Cluster read** is `RedisClusterStore.read_user`: the user's profile and recent list
  share a slot (`u:{user}`, `r:{user}`), the 20 counter keys spread over all three
  masters, so a read touches all three nodes. The client groups the commands by node and
  writes every node's pipeline on its own RESP3 socket before reading any reply
  (`feature_store/resp.py`, `round_trips`), so the nodes work at the same time; a key's
  slot is a CRC16 cached per key, its node a list lookup in the client's slot map. A
  redirect, an error reply or a dead node sends the whole read through the general path
  (`_run`: ASK, MOVED, map refresh, retry): reads are safe to repeat.
- **Why the full read stays above one node here.** Touching three servers costs three
  sends, three receives and three servers woken; the **PING fan-out** column is that cost
  with no work in it, ~1.7-2.9× one PING on this box. The box has 2 cores shared by the
  client, the 6 cluster processes, the private node, the shared Redis and other work
  (load 7-15 during these runs), so the three servers do not run at the same time and the
  client blocks once per node whose reply is not there yet. Client CPU measured apart
  (thread time, 3,000 reads of 50 events + 20 counters, load ~13): 192 µs per cluster read
  vs 91 µs per one-node read, of which ~22 µs are the two extra sends and receives (PING
  fan-out 56 µs vs one PING 34 µs), ~15 µs grouping commands and merging replies in
  Python (timed alone), and the remaining ~60 µs most likely the two extra blocking waits
  (a context switch each, with cold caches after). Where each node has its own
  cores and the client its own, the three round trips overlap; that could not be measured
  here. Take the fan-out's own cost away (PING fan-out − one PING, ~115 µs at 50 events
  in the 2026-12-07 00:06 run) and the cluster read is ~1.17× the one-node read; a second,
  read-only run right after it (`--parts reads --samples 3000`, load 5.3 → 9.1) gave 1.64×
  (async 1.59×, fan-out 2.49× one PING, redis-py 2.85×), ~1.20× without the fan-out's
  cost. **User only** (one node on both sides) is the client's routing overhead plus the
  difference between one cluster node process and the private one; it moves between
  0.8× and 1.4× from run to run at this load.
- **What this change bought**, measured interleaved against the previous client on the
  same cluster (3,000 reads, 50 events, load ~13): sync read 1.67× → 1.58× one node, async
  read 1.63× → 1.46×. The previous client already wrote all nodes before reading; it lost
  time in its general routing path (ASK bookkeeping, per-node reply splitting) and, for
  async, in one asyncio task per node. (The 2.11× of the run before compared against the
  shared Redis at a different load; this run's table has both baselines.)
- **redis-py** (`redis.cluster.RedisCluster`, the obvious alternative to the hand-written
  client): its pipeline for the same read is ~3× the store's read in every row. Per
  command it builds a command object, looks up slot and node, and per reply runs
  `read_response` and the response callbacks in Python; that costs more than the round
  trips themselves. That is why the read path keeps its own sockets and slot map; the
  rest (schema check, documents, log reads) uses redis-py's cluster client.
- The server reads with `read_user_async` (one pipelined asyncio connection per node and
  event loop; each node's request is written at once on its open connection, the replies
  awaited together); the **async** columns time it inside a running loop.
- Writes on the cluster run one Lua script per slot an event touches (the log's slot, the
  user's, each counter key's), each gated by its own `ok:` marker, then `WAIT 1` and `ROLE`
  on every master written to. **WAIT 1** is what makes "accepted" mean "on a replica too";
  the no-WAIT column shows what that costs (within noise here). Small batches (what
  RecordEvents sends) run at 0.7-1× the one-node rate. Large batches fall far behind,
  for three reasons measured apart (500-event calls, load ~10): (1) one node runs one
  script per 50 events, the cluster ~1.2 per event (a batch's counter keys are in
  hundreds of slots, each its own script; ~600 scripts, ~310 KB per call), and a script
  has a fixed cost in Redis (~13 µs alone vs ~2 µs for a plain command); (2) the master
  holding the event log's slot runs every event's log part (~30 ms of Redis time per
  call vs ~11 ms on the other two): the serial part of the write path; (3) every script
  also runs on a replica, on the same 2 cores (the private node has no replica). The
  client now sends flat script arguments instead of a JSON document per script: client
  CPU per event at 500-event batches 38 → 29 µs (interleaved A/B), Redis time per script
  unchanged within noise. One script per node instead of per slot would need scripts
  reaching undeclared keys in other slots (`allow-cross-slot-keys`), which fail half-way
  when a slot moves and so lose the per-slot atomicity the markers rely on; not done.
- Slot moves (resharding): reads follow ASK and MOVED; an event write to a slot while it
  moves is refused by Redis (TRYAGAIN) and completes when resent after the move
  (`test_reads_and_writes_follow_a_slot_being_migrated`, docs/deploy.md).
- Memory: a user and a counter cost what they cost on one node (the keys are the same)
  plus the cluster's per-key slot bookkeeping. A recorded event costs more than on one
  node because it leaves one marker per slot it touched, each kept `event_id_ttl_s` (7
  days by default): lower that TTL to bound the markers, at the price of a shorter window
  in which a resent event is recognised. The per-user figure is steady from run to run
  (1,165 B in the last two); the per-counter and per-event ones are `used_memory`
  differences of 10-25 MB and move with the allocator's state (counters 360 and 192 B,
  events 464 and 1,298 B in the last two runs; the old and the new event-write code
  gave 660-930 B each, alternated on one cluster).
"""


def _cell(row: dict[str, Any], name: str) -> str:
    """``p50 / p99`` of one measurement, in µs."""
    return f"{row[name]['p50_us']:.0f} / {row[name]['p99_us']:.0f}"


def _ratio(row: dict[str, Any], name: str, base: str = "redis_ping") -> str:
    """p50 of ``name`` over p50 of ``base``."""
    return f"{row[name]['p50_us'] / row[base]['p50_us']:.2f}×"


def write_up(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Feature store benchmark",
        "",
        f"Command: `SHARED_DATA=../shared/data .venv/bin/{meta['command']}` "
        f"(also run by `make bench`). Run {meta['time']}, Python {meta['python']}, "
        f"{meta['cpus']} CPUs shared with other work (`uptime` 1-min load average "
        f"{meta['loadavg_start']} at the start, {meta['loadavg']} at the end; absolute "
        "numbers are low and noisy; "
        "compare the ratios, measured interleaved in the same loop), hiredis "
        f"{meta['hiredis']}. Data: MovieLens ml-latest-small ratings replayed as "
        f"{meta['events_loaded']:,} events of {meta['users']} users over {meta['items']:,} "
        f"items; counters with {len(COUNTER_FIELDS)} fields per item; {meta['samples']:,} "
        "samples per point.",
        "",
        f"## Per-request read: profile + recent events + counters of {ITEMS_PER_REQUEST} items",
        "",
        "µs, p50 / p99. PING = redis-py `client.ping()` (the baseline of the target); raw "
        "PING = a PING on the read path's own socket (no redis-py: the floor).",
        "",
        "| recent events | PING | Redis read | **read / PING (p50)** | SQLite read | "
        "SQLite / PING |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = sorted(results["reads"].items(), key=lambda kv: int(kv[0]))
    for cap, row in rows:
        lines.append(
            f"| {cap} | {_cell(row, 'redis_ping')} | {_cell(row, 'redis_read')} | "
            f"**{_ratio(row, 'redis_read')}** | {_cell(row, 'sqlite_read')} | "
            f"{_ratio(row, 'sqlite_read')} |"
        )
    lines += [
        "",
        "Where the time goes (same run):",
        "",
        "| recent events | raw PING | Redis wire | Redis read + events | SQLite read + events "
        "| read / raw PING | wire / PING | read + events / PING |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cap, row in rows:
        lines.append(
            f"| {cap} | {_cell(row, 'raw_ping')} | {_cell(row, 'redis_wire')} | "
            f"{_cell(row, 'redis_read_events')} | {_cell(row, 'sqlite_read_events')} | "
            f"{_ratio(row, 'redis_read', 'raw_ping')} | {_ratio(row, 'redis_wire')} | "
            f"{_ratio(row, 'redis_read_events')} |"
        )
    r = target_ratios(results)

    def verdict(ratio: float) -> str:
        return "**met**" if ratio <= TARGET_RATIO else "**missed**"

    lines += [
        "",
        f"TARGET: Redis read p50 within {TARGET_RATIO:.0f}× a bare PING p50 (at "
        f"{TARGET_EVENTS} recent events). Against redis-py's `ping()` (the baseline this "
        f"benchmark has used since its first run): {verdict(r['read'])}, `read_user` is "
        f"{r['read']:.2f}× (with every recent event then used, as fold-in does: "
        f"{r['read_events']:.2f}×). Read strictly, against a PING on a raw socket: "
        f"{verdict(r['read_raw'])}, the read is {r['read_raw']:.2f}× — it is one round "
        "trip, but Redis runs 22 commands in it and ~250 reply elements are parsed.",
        "",
        "## Redis Cluster (3 masters + 3 replicas, this machine): the same read",
        "",
        "µs, p50 / p99, measured in the same loop as the tables above. **One node** here is "
        "a private `redis-server` started by the benchmark like the cluster's nodes (fresh, "
        "no other traffic): the baseline of the target. The shared Redis of the tables above "
        "also answers every other call of the loop and other work on the machine; its ratio "
        "is given too. **Async** is `read_user_async` awaited inside a running event loop (what "
        "the gRPC server calls).",
        "",
        "| recent events | one-node read | cluster read | **cluster / one node (p50)** | "
        "cluster / shared Redis | async p50: one node / cluster | async: cluster / one node "
        "| user only, p50: one node / cluster | user only: cluster / one node |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cap, row in rows:
        lines.append(
            f"| {cap} | {_cell(row, 'private_read')} | {_cell(row, 'cluster_read')} | "
            f"**{_ratio(row, 'cluster_read', 'private_read')}** | "
            f"{_ratio(row, 'cluster_read', 'redis_read')} | "
            f"{row['private_async_read']['p50_us']:.0f} / "
            f"{row['cluster_async_read']['p50_us']:.0f} | "
            f"{_ratio(row, 'cluster_async_read', 'private_async_read')} | "
            f"{row['private_user']['p50_us']:.0f} / {row['cluster_user']['p50_us']:.0f} | "
            f"{_ratio(row, 'cluster_user', 'private_user')} |"
        )
    met = r["cluster"] <= TARGET_CLUSTER
    lines += [
        "",
        f"TARGET: cluster read p50 ≤ {TARGET_CLUSTER}× the one-node read p50 (at "
        f"{TARGET_EVENTS} recent events): {'**met**' if met else '**missed**'}, "
        f"{r['cluster']:.2f}× (async read {r['cluster_async']:.2f}×; against the shared "
        f"Redis {r['cluster_shared']:.2f}×)"
        + ("." if met else f", {r['cluster'] / TARGET_CLUSTER - 1:.0%} over the target.")
        + f" The floor of any read that touches the three masters, one PING to each sent "
        f"together, is {r['fanout_floor']:.2f}× one PING on this box (next table).",
        "",
        "### The cluster client: hand-written vs redis-py, and the floor of touching 3 nodes",
        "",
        "µs, p50 / p99, same loop. **redis-py** is `redis.cluster.RedisCluster` (redis-py "
        f"{redis_version()}, RESP3, hiredis) running the same 22 commands as one "
        "`pipeline(transaction=False)` and the same answer built from its replies. **PING "
        "fan-out** is one PING to each of the 3 masters on the read path's sockets, all sent "
        "before any reply is read; **one PING** the same on the one-node server.",
        "",
        "| recent events | cluster read (feature_store) | cluster read (redis-py) | "
        "**redis-py / feature_store** | PING fan-out, 3 masters | one PING | fan-out / one "
        "PING |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cap, row in rows:
        lines.append(
            f"| {cap} | {_cell(row, 'cluster_read')} | {_cell(row, 'cluster_redispy_read')} | "
            f"**{_ratio(row, 'cluster_redispy_read', 'cluster_read')}** | "
            f"{_cell(row, 'cluster_fanout_ping')} | {_cell(row, 'private_raw_ping')} | "
            f"{_ratio(row, 'cluster_fanout_ping', 'private_raw_ping')} |"
        )
    lines += [
        "",
        "## Event write throughput (`record_events`, one counter delta per event)",
        "",
        "Redis = the shared one; one node = the private `redis-server` (no replica); "
        "cluster = 3 masters, each with a replica.",
        "",
        "| events per call | SQLite events/s | Redis events/s | one node events/s | "
        "cluster events/s (WAIT 1) | cluster events/s (no WAIT) | cluster (WAIT 1) / one "
        "node |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    w = results["writes"]
    for batch in sorted(w["redis"], key=int):
        lines.append(
            f"| {batch} | {w['sqlite'][batch]:,.0f} | {w['redis'][batch]:,.0f} | "
            f"{w['private'][batch]:,.0f} | {w['cluster'][batch]:,.0f} | "
            f"{w['cluster_nowait'][batch]:,.0f} | "
            f"{w['cluster'][batch] / w['private'][batch]:.2f}× |"
        )
    m = results["memory"]
    lines += [
        "",
        f"## Cluster memory at {m['users']:,} users",
        "",
        "`used_memory` summed over the 3 masters, before and after (the replicas hold as "
        "much again).",
        "",
        "| what | count | bytes each |",
        "| --- | ---: | ---: |",
        f"| user: profile hash (3 features) + recent list ({m['recent_per_user']} events, "
        f"EXPIRE) | {m['users']:,} | {m['bytes_per_user']:,.0f} |",
        f"| item counter: sorted set of {len(COUNTER_FIELDS)} fields | {m['items']:,} | "
        f"{m['bytes_per_item_counter']:,.0f} |",
        f"| recorded event: its 3 `ok:` markers (log, user, counter slot), log row, recent "
        f"entry | {m['events']:,} | {m['bytes_per_event']:,.0f} |",
        "",
        f"After the run the masters held {m['masters_used_memory'] / 2**20:,.0f} MiB in "
        f"all ({m['users']:,} users loaded in {m['users_load_s']:.0f} s).",
        "",
        "![read latency and write throughput](feature_store.png)",
        "",
        NOTES,
        CLUSTER_NOTES,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
