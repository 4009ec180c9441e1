"""Redis Cluster backend: the store past one Redis, shared by every server replica.

URL: ``redis+cluster://HOST:PORT[,HOST:PORT...][?prefix=...]`` (``rediss+cluster://`` for
TLS, ``redis+cluster://USER:PASSWORD@...`` for AUTH), the ``HOST:PORT`` pairs being seed
nodes: any reachable one tells the slot map (``CLUSTER SLOTS``). The key layout is
``feature_store/redis.py``'s, whose braces are hash tags:

* a user's profile and recent events (``u:{user_id}``, ``r:{user_id}``) share a slot, so
  a Recommend read touches that user's node and the nodes of its counter keys, one
  pipelined round trip per node, all nodes in flight at once;
* bandit counters (``cz:KEY``) hash by their whole key (item, bucket), so they spread over
  every slot: no single hot slot however skewed the traffic;
* each request's served row (``sx:{request_id}``) has its own slot, found by request id;
* the two logs (``log:event``, ``log:exposure``) are one stream each, so each lives in one
  slot: the serial part of the write path, trimmed as on one node.

Event writes, per slot: an event touches the log's slot, its user's slot and the slots
of its counter keys. For each slot it touches, one Lua script (batched per slot, pipelined
per node) gates on that slot's own marker ``P ok:{T}EVENT_ID`` (``T`` a short tag of the
slot, :func:`slot_tag`; EXPIRE ``event_id_ttl_s``) and applies that slot's part only when
its marker is new. So every part is atomic and idempotent on its own, and a batch that
failed halfway (a node died) is completed by sending it again, each part counted once.
Whether an event is new is what the log slot's marker says: idempotent by event id, as
on one node.

Acknowledged ("accepted") event: ``record_events`` returns only after every master it
wrote to has the write on ``wait_replicas`` replicas (``WAIT``, at most
``wait_timeout_ms``; a master with fewer replicas connected needs all it has). A master
that misses that raises :class:`FeatureStoreUnavailable` (the caller retries; the markers
make the retry safe). The documented window of loss: a master with *no* replica connected
(the promoted replica of a master that died, until that master or another replica
rejoins) acknowledges alone, so a second failure of that node inside the window loses
what it acknowledged since; :attr:`RedisClusterStore.unreplicated_writes` counts those
writes and each is logged. Redis replication is asynchronous: without WAIT every write in
the last ~replication lag before a failover could be lost.

Routing: the client keeps its own slot map and its own RESP3 sockets per node
(``feature_store/resp.py``), as the one-node read path does. Why not redis-py's
``RedisCluster`` here: its pipeline, running the same read (22 commands over 3 masters),
took about 3x the time of this client's read in the same benchmark loop
(docs/benchmarks/feature_store.md, "hand-written vs redis-py"): per command it builds a
command object, finds the slot and node and later parses each reply in Python, which costs
more than the round trips. A read groups its commands by node, writes every node's
pipeline before reading any reply (:func:`~feature_store.resp.round_trips`), and on any
trouble (a redirect, an error reply, a dead node, TLS) runs again through :meth:`_run`, the
one place that handles redirects. The server reads with
:meth:`RedisClusterStore.read_user_async` (one pipelined asyncio connection per node and
event loop, each node's request sent at once and the replies awaited together; plain TCP,
TLS reads run inline). In :meth:`_run`, MOVED puts the named node in the slot map for the
retry (and the whole map is re-read, at most every ``REFRESH_MIN_S``), a connection error
or a timeout re-reads the map, ASK (a slot being moved) is followed with ASKING, TRYAGAIN
(a script on a slot being moved) is retried as is, NOSCRIPT loads the scripts on that
node; each command is retried at most twice. A slot that is being moved refuses event
writes until its move ends (TRYAGAIN: the event's new marker is not on either side), so
those raise :class:`FeatureStoreUnavailable` and a resend completes them. Everything off
the request path (schema check, documents, the log reads) goes through redis-py's
``RedisCluster``.

Failover: while a master is down and not yet replaced, calls that touch its slots raise
:class:`FeatureStoreUnavailable` within the timeouts (callers degrade: empty user state,
skipped exposure writes) and calls on other masters' slots go on (the cluster needs
``cluster-require-full-coverage no``, docs/deploy.md). After the replica is promoted the
next failing call refreshes the map and writes resume, nothing to restart.

Not atomic across slots: ``incr_counters`` is atomic per counter key; a profile rewrite
per user (a Lua script per key). The read of one request is not a snapshot across nodes
(it never was across requests).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from feature_store.base import CounterDelta, ExposureRecord, StoredEvent, UserState
from feature_store.codec import (
    EVENT_FIELDS,
    check_batch,
    delta_rows,
    dumps,
    exposure_json,
)
from feature_store.config import StoreSettings
from feature_store.errors import FeatureStoreConfigError, FeatureStoreUnavailable
from feature_store.redis import (
    EXPOSURE_CHUNK,
    SCRIPT_BATCH,
    PoolReads,
    RedisStore,
    _user_state,
    item_key,
    profile_key,
    public_url,
    recent_key,
)
from feature_store.resp import (
    AsyncRespConnections,
    RespConnection,
    RespConnections,
    pack_command,
    round_trips,
)

log = logging.getLogger("feature_store.redis_cluster")
T = TypeVar("T")

SLOTS = 16384
REFRESH_MIN_S = 0.05  # a storm of failing calls refreshes the slot map once per this
RETRYABLE = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "NOSCRIPT")
WARN_EVERY_S = 10.0

# Per slot: KEYS = per entry its marker, then one key per op; ARGV[1..5] = recent cap,
# recent TTL, id TTL, log MAXLEN, counter TTL (0 = none); then per entry its number of ops
# and per op: "r", recent entry (LPUSH+LTRIM+EXPIRE) | "x", N, N field/value strings (XADD)
# | "z", field, amount (ZINCRBY, +EXPIRE). Flat arguments rather than one JSON document:
# most scripts of a large batch carry one entry (a batch's counter keys are in hundreds of
# slots), so a JSON encode per script in the client and cjson in Redis were a fixed cost
# per script. Returns 1 (new) / 0 (seen) per entry.
SLOT_EVENTS_LUA = """
local cap = tonumber(ARGV[1])
local recent_ttl = tonumber(ARGV[2])
local id_ttl = tonumber(ARGV[3])
local maxlen = tonumber(ARGV[4])
local counter_ttl = tonumber(ARGV[5])
local out = {}
local k, a, i = 1, 6, 0
while a <= #ARGV do
  i = i + 1
  local n_ops = tonumber(ARGV[a])
  a = a + 1
  local new = redis.call('SET', KEYS[k], '1', 'NX', 'EX', id_ttl)
  k = k + 1
  for _ = 1, n_ops do
    local kind, key = ARGV[a], KEYS[k]
    k = k + 1
    if kind == 'r' then
      if new then
        redis.call('LPUSH', key, ARGV[a + 1])
        redis.call('LTRIM', key, 0, cap - 1)
        redis.call('EXPIRE', key, recent_ttl)
      end
      a = a + 2
    elseif kind == 'x' then
      local n = tonumber(ARGV[a + 1])
      if new then
        redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, a + 2, a + 1 + n))
      end
      a = a + 2 + n
    else
      if new then
        redis.call('ZINCRBY', key, ARGV[a + 2], ARGV[a + 1])
        if counter_ttl > 0 then redis.call('EXPIRE', key, counter_ttl) end
      end
      a = a + 3
    end
  end
  out[i] = new and 1 or 0
end
return out
"""

# KEYS[1] = a hash; ARGV = field, value, ...: the row replaced as one step (a reader never
# sees half a row; MULTI would do on one node, a script does on any slot).
REPLACE_HASH_LUA = """
redis.call('DEL', KEYS[1])
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
"""


def _pack(args: tuple[str | bytes, ...]) -> bytes:
    """RESP encoding of one command in C (hiredis): ~3x faster than ``resp.pack_command``,
    which counts on the write path (one script call per slot an event touches)."""
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub types a 1-tuple


def key_slot(key: str) -> int:
    """The key's hash slot (CRC16-XMODEM of its hash tag, or of the whole key)."""
    data = key.encode()
    start = data.find(b"{")
    if start > -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    """For every slot, the shortest hex string that hashes to it (built once: ~0.1 s)."""
    tags: list[str | None] = [None] * SLOTS
    missing, n = SLOTS, 0
    while missing:
        tag = format(n, "x")
        slot = binascii.crc_hqx(tag.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> str:
    """A hash tag of ``slot``: ``{T}`` in a key puts the key in that slot."""
    return _slot_tags()[slot]


@functools.lru_cache(maxsize=65_536)
def _counter_read(prefix: str, key: str) -> tuple[int, bytes]:
    full = prefix + "cz:" + key
    return key_slot(full), pack_command(b"ZRANGE", full, b"0", b"-1", b"WITHSCORES")


@functools.lru_cache(maxsize=65_536)
def _user_read(prefix: str, user_id: str, last: bytes) -> tuple[tuple[int, bytes], ...]:
    """The user's HGETALL and LRANGE, routed and packed once per active user."""
    profile, recent = profile_key(prefix, user_id), recent_key(prefix, user_id)
    return (
        (key_slot(profile), _pack((b"HGETALL", profile))),
        (key_slot(recent), _pack((b"LRANGE", recent, b"0", last))),
    )


def _by_node(
    commands: Sequence[tuple[int, bytes]], owner: list[str]
) -> dict[str, tuple[list[int], list[bytes]]]:
    """``(slot, packed)`` commands grouped by their slot's master: (indexes, packed)."""
    groups: dict[str, tuple[list[int], list[bytes]]] = {}
    for i, (slot, packed) in enumerate(commands):
        address = owner[slot]
        group = groups.get(address)
        if group is None:
            groups[address] = ([i], [packed])
        else:
            group[0].append(i)
            group[1].append(packed)
    return groups


def _merge(
    groups: dict[str, tuple[list[int], list[bytes]]], parts: Sequence[list[Any]], n: int
) -> list[Any]:
    """The nodes' replies back in the order of the commands."""
    if len(parts) == 1:
        return parts[0]
    replies: list[Any] = [None] * n
    for (idx, _), part in zip(groups.values(), parts, strict=True):
        for i, reply in zip(idx, part, strict=True):
            replies[i] = reply
    return replies


@functools.lru_cache(maxsize=65_536)
def _counter_slot(prefix: str, key: str) -> tuple[str, int]:
    """A counter's full key and its slot (hot items recur in every batch)."""
    full = prefix + "cz:" + key
    return full, key_slot(full)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, bool]:
    """``(seeds, username, password, tls)`` of a ``redis+cluster://`` URL."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    if parts.path not in ("", "/", "/0"):
        raise FeatureStoreConfigError(
            f"feature store URL {public_url(url)!r}: a Redis Cluster has only DB 0 "
            f"(redis+cluster://HOST:PORT[,HOST:PORT...][?prefix=...])"
        )
    seeds: list[tuple[str, int]] = []
    for seed in hosts.split(","):
        host, sep, port = seed.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise FeatureStoreConfigError(
                f"feature store URL {public_url(url)!r}: seed {seed!r} is not HOST:PORT "
                f"(redis+cluster://HOST:PORT[,HOST:PORT...])"
            )
        seeds.append((host, int(port)))
    return seeds, username, password, parts.scheme.startswith("rediss")


class RedisClusterStore(RedisStore):
    """:class:`~feature_store.base.OnlineStore` on a Redis Cluster (same keys as one node)."""

    def __init__(self, url: str, settings: StoreSettings | None = None) -> None:
        self.settings = s = settings or StoreSettings()
        self.url = url
        self.prefix = s.prefix
        if "{" in self.prefix or "}" in self.prefix:
            raise FeatureStoreConfigError(
                f"feature store URL {public_url(url)!r}: prefix {self.prefix!r} must not "
                f"contain braces on a Redis Cluster (they would be every key's hash tag)"
            )
        self.seeds, self._username, self._password, self._tls = parse_cluster_url(url)
        # asyncio reads: one pipelined connection per node and event loop (plain TCP; TLS
        # reads run inline through redis-py)
        self.async_reads = not self._tls
        self._async_reads = None  # the one-node store's; this one keeps one per node
        self._async_nodes: dict[str, AsyncRespConnections] = {}
        self._stream = {"event": self._k("log:event"), "exposure": self._k("log:exposure")}
        self._log_slots = {kind: key_slot(key) for kind, key in self._stream.items()}
        self._last_recent = str(s.recent_events_cap - 1).encode()
        self._nodes: dict[str, RespConnections | PoolReads] = {}
        self._owner: list[str] | None = None  # slot -> "host:port" of its master
        self._refresh_lock = threading.Lock()
        self._owner_stale = False  # an asyncio read failed: refresh before the next call
        self._refreshed_at = 0.0
        self._cluster: redis.RedisCluster | None = None
        self._cluster_lock = threading.Lock()
        self._scripts = {
            name: (body, _sha1(body))
            for name, body in (("events", SLOT_EVENTS_LUA), ("hash", REPLACE_HASH_LUA))
        }
        self._warned: dict[str, float] = {}
        #: Event-write round trips acknowledged by a master that had no replica connected
        #: (the documented window of loss; see the module docstring).
        self.unreplicated_writes = 0
        self._schema_checked = False
        try:
            self._check_schema()
        except FeatureStoreUnavailable:
            pass  # the cluster down: the first call that reaches it checks (see _call)
        except BaseException:
            self.close()
            raise

    # -- redis-py's cluster client: schema, documents, logs --------------------------------------
    @property
    def _client(self) -> redis.RedisCluster:  # type: ignore[override]
        """Created on first use: it reads the topology at construction, and a store must
        open while the cluster is down."""
        if self._cluster is None:
            with self._cluster_lock:
                if self._cluster is None:
                    s = self.settings
                    kwargs: dict[str, Any] = {
                        "startup_nodes": [ClusterNode(h, p) for h, p in self.seeds],
                        "socket_connect_timeout": s.connect_timeout_s,
                        "socket_timeout": s.socket_timeout_s,
                        "retry": Retry(NoBackoff(), 1),
                        "require_full_coverage": False,
                        "username": self._username,
                        "password": self._password,
                        "max_connections": s.pool_size,
                    }
                    if self._tls:
                        kwargs["ssl"] = True
                    self._cluster = redis.RedisCluster(**kwargs)
        return self._cluster

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return super()._call(fn)
        except RedisClusterException as exc:  # redis-py's cluster errors outside RedisError
            raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {exc}") from exc

    def _check_schema(self) -> None:
        try:
            super()._check_schema()
        except RedisClusterException as exc:
            raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {exc}") from exc

    # -- the slot map ------------------------------------------------------------------------------
    def _node(self, address: str) -> RespConnections | PoolReads:
        conns = self._nodes.get(address)
        if conns is None:
            host, _, port = address.rpartition(":")
            s = self.settings
            # a write waits for its replicas (WAIT) inside the socket timeout
            timeout = s.socket_timeout_s + s.wait_timeout_ms / 1000
            if self._tls:
                conns = PoolReads(
                    redis.BlockingConnectionPool(
                        connection_class=redis.SSLConnection,
                        host=host,
                        port=int(port),
                        username=self._username,
                        password=self._password,
                        protocol=3,
                        decode_responses=True,
                        max_connections=s.pool_size,
                        timeout=s.connect_timeout_s + timeout,
                        socket_connect_timeout=s.connect_timeout_s,
                        socket_timeout=timeout,
                    )
                )
            else:
                conns = RespConnections(
                    host,
                    int(port),
                    0,
                    username=self._username,
                    password=self._password,
                    connect_timeout_s=s.connect_timeout_s,
                    socket_timeout_s=timeout,
                    limit=s.pool_size,
                )
            conns = self._nodes.setdefault(address, conns)
        return conns

    def _refresh(self, force: bool = False) -> None:
        """Read the slot map from the first node that answers (known masters, then seeds)."""
        with self._refresh_lock:
            if not force and time.monotonic() - self._refreshed_at < REFRESH_MIN_S:
                return
            self._refreshed_at = time.monotonic()
            candidates = list(dict.fromkeys([*self._nodes, *(f"{h}:{p}" for h, p in self.seeds)]))
            errors: list[str] = []
            for address in candidates:
                try:
                    (reply,) = self._node(address).round_trip(pack_command(b"CLUSTER", b"SLOTS"), 1)
                except redis.RedisError as exc:
                    errors.append(f"{address}: {exc}")
                    continue
                owner = _slot_owners(reply, address.rpartition(":")[0])
                if owner is not None:
                    self._owner = owner
                    return
                errors.append(f"{address}: its slot map does not cover every slot yet")
            raise redis.ConnectionError(
                "no Redis Cluster node gave a slot map: " + "; ".join(errors)
            )

    def _slot_map(self) -> list[str]:
        """slot -> ``host:port`` of its master, read from the cluster when not known yet
        (or after an asyncio read failed)."""
        if self._owner_stale:
            self._owner_stale = False
            with contextlib.suppress(redis.RedisError):
                self._refresh()
        owner = self._owner
        if owner is None:
            self._refresh(force=True)
            owner = self._owner
            assert owner is not None
        return owner

    def _address(self, slot: int) -> str:
        return self._slot_map()[slot]

    # -- the transport: commands by slot, one pipelined round trip per node, all in flight ----
    def _run(
        self, commands: Sequence[tuple[int, bytes]], trailer: Sequence[bytes] = ()
    ) -> tuple[list[Any], dict[str, list[Any]]]:
        """Send each ``(slot, packed command)`` to its slot's master and return the replies
        in order, plus the replies of ``trailer`` (keyless commands sent after a node's
        commands on the same connection) per node. Redirects, connection errors and timeouts
        refresh the slot map and retry the commands concerned once; raises ``redis``
        errors only (an error reply as ``redis.ResponseError``)."""
        replies: list[Any] = [None] * len(commands)
        trailers: dict[str, list[Any]] = {}
        todo = list(range(len(commands)))
        asking: dict[int, str] = {}
        last_error: BaseException | None = None
        for attempt in (1, 2, 3):
            if not todo:
                break
            groups: dict[str, list[int]] = {}
            owner = self._slot_map()
            for i in todo:
                address = asking.get(i) if asking else None
                address = address or owner[commands[i][0]]
                group = groups.get(address)
                if group is None:
                    groups[address] = [i]
                else:
                    group.append(i)
            todo, asked_now, asking = [], asking, {}
            moved: dict[int, str] = {}
            outcome = self._round_trips(
                [
                    (address, *self._pack(commands, idx, asked_now), trailer)
                    for address, idx in groups.items()
                ]
            )
            refresh = False
            for (address, idx), result in zip(groups.items(), outcome, strict=True):
                if isinstance(result, BaseException):
                    last_error = result
                    todo += idx  # scripts are idempotent: resending one is safe
                    if isinstance(result, NoScriptError):  # redis-py (TLS) raises replies
                        self._load_scripts(address)
                    else:
                        refresh = True
                    continue
                own, tail = result
                trailers[address] = tail
                for i, reply in zip(idx, own, strict=True):
                    if isinstance(reply, Exception) and str(reply).startswith(RETRYABLE):
                        last_error = reply
                        todo.append(i)
                        text = str(reply)
                        if text.startswith("ASK "):
                            asking[i] = text.split()[2]
                        elif text.startswith("MOVED "):
                            _, moved_slot, moved_to = text.split()
                            moved[int(moved_slot)] = moved_to
                            refresh = True
                        elif text.startswith("NOSCRIPT"):
                            self._load_scripts(address)
                        elif not text.startswith("TRYAGAIN"):  # that one: the same node
                            refresh = True
                    else:
                        replies[i] = reply
            if todo and attempt < 3:
                if refresh:
                    self._refresh()
                # what MOVED said wins over the map: a refresh may be rate-limited away or
                # have asked a node that has not heard of the move yet
                owner = self._slot_map()
                for slot_, moved_to in moved.items():
                    owner[slot_] = moved_to
            elif todo:
                break
        if todo:
            if isinstance(last_error, redis.RedisError):
                raise last_error
            raise redis.ResponseError(str(last_error))
        for reply in replies:
            if isinstance(reply, Exception):
                raise redis.ResponseError(str(reply))
        return replies, trailers

    def _read(self, commands: Sequence[tuple[int, bytes]]) -> list[Any]:
        """Replies of read-only commands: each node's commands as one pipelined request, all
        nodes written before any is read (:func:`~feature_store.resp.round_trips`). On any
        trouble (a redirect, an error reply, a dead node, TLS nodes) the whole read goes
        through :meth:`_run`, which refreshes the map and retries: reads are safe to repeat,
        and keeping that logic in one place keeps this path short."""
        groups = _by_node(commands, self._slot_map())
        requests = []
        for address, (_, packed) in groups.items():
            conns = self._node(address)
            if not isinstance(conns, RespConnections):
                return self._run(commands)[0]
            requests.append((conns, b"".join(packed), len(packed)))
        try:
            parts = round_trips(requests)
        except redis.RedisError:
            return self._run(commands)[0]
        replies = _merge(groups, parts, len(commands))
        for reply in replies:
            if isinstance(reply, Exception):
                return self._run(commands)[0]
        return replies

    @staticmethod
    def _pack(
        commands: Sequence[tuple[int, bytes]], idx: list[int], asked: dict[int, str]
    ) -> tuple[bytes, list[bool]]:
        """One node's commands as one write, ASKING before those redirected by ASK."""
        if not asked:
            return b"".join([commands[i][1] for i in idx]), [False] * len(idx)
        packed = b"".join(
            (b"*1\r\n$6\r\nASKING\r\n" if i in asked else b"") + commands[i][1] for i in idx
        )
        return packed, [i in asked for i in idx]

    def _round_trips(
        self, groups: list[tuple[str, bytes, list[bool], Sequence[bytes]]]
    ) -> list[tuple[list[Any], list[Any]] | BaseException]:
        """Send every node's commands, then read every node's replies: the nodes work in
        parallel, the wall time is about one round trip. Per node: (command replies,
        trailer replies) or the connection error."""
        out: list[tuple[list[Any], list[Any]] | BaseException] = []
        sent: list[tuple[RespConnections, RespConnection, int] | None] = []
        try:
            for address, packed, asked, trailer in groups:
                conns = self._node(address)
                n = len(asked) + sum(asked) + len(trailer)
                data = packed + b"".join(trailer)
                sent.append(None)
                if isinstance(conns, PoolReads):  # TLS: one node after the other
                    try:
                        out.append(_split(conns.round_trip(data, n), asked, len(trailer)))
                    except redis.RedisError as exc:
                        out.append(exc)
                    continue
                try:
                    conn = conns._acquire()
                except redis.RedisError as exc:  # every connection to the node busy
                    out.append(exc)
                    continue
                try:
                    if conn.sock is None or conn.generation != conns.generation:
                        conn.open(conns)
                    assert conn.sock is not None
                    conn.sock.sendall(data)
                except (redis.RedisError, OSError) as exc:
                    conn.close()
                    conns._idle.append(conn)
                    conns.generation += 1  # as RespConnections does: idle sockets are suspect
                    if isinstance(exc, OSError):
                        exc = redis.ConnectionError(f"{conns.address}: {exc}")
                    out.append(exc)
                    continue
                except BaseException:
                    conn.close()
                    conns._idle.append(conn)
                    raise
                out.append(([], []))
                sent[-1] = (conns, conn, n)
            for k, item in enumerate(sent):
                if item is None:
                    continue
                conns, conn, n = item
                sent[k] = None
                _, _, asked, trailer = groups[k]
                try:
                    replies = conn.read_replies(n, conns.address)
                    out[k] = _split(replies, asked, len(trailer))
                except redis.RedisError as exc:
                    if isinstance(exc, redis.ConnectionError):
                        conns.generation += 1
                    out[k] = exc
                finally:
                    conns._idle.append(conn)
        finally:
            for item in sent:  # interrupted: replies left unread would poison these sockets
                if item is not None:
                    item[1].close()
                    item[0]._idle.append(item[1])
        return out

    def _load_scripts(self, address: str) -> None:
        packed = b"".join(pack_command(b"SCRIPT", b"LOAD", b) for b, _ in self._scripts.values())
        self._node(address).round_trip(packed, len(self._scripts))

    def _evalsha(self, script: str, keys: Sequence[str], args: Sequence[str | bytes]) -> bytes:
        sha = self._scripts[script][1]
        return _pack((b"EVALSHA", sha, str(len(keys)), *keys, *args))

    # -- profiles and items ------------------------------------------------------------------------
    def _replace_hashes(self, batch: list[tuple[str, dict[str, str]]]) -> int:
        commands = []
        for key, values in batch:
            flat = [x for pair in values.items() for x in pair]
            commands.append((key_slot(key), self._evalsha("hash", [key], flat)))
        self._call(lambda: self._run(commands))
        return len(batch)

    def get_item_attributes(self, item_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        keys = [item_key(self.prefix, i) for i in ids]
        commands = [(key_slot(k), pack_command(b"HGETALL", k)) for k in keys]
        replies = self._call(lambda: self._read(commands))
        return {i: dict(h) for i, h in zip(ids, replies, strict=True) if h}

    # -- the request read ------------------------------------------------------------------------
    def read_user(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        keys = list(dict.fromkeys(counter_keys))
        commands = self._read_routed(user_id, keys)
        replies = self._call(lambda: self._read(commands))
        return _user_state(user_id, keys, replies)

    async def read_user_async(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        """:meth:`read_user` on the event loop: each node's commands on that node's
        pipelined asyncio connection, all nodes awaited together, so the loop serves other
        requests during the round trip. A redirect (the slot map changed) is retried by the
        synchronous path, which refreshes the map; a connection error or timeout is
        FeatureStoreUnavailable at once (the next call refreshes the map)."""
        owner = self._owner
        if not self.async_reads or not self._schema_checked or owner is None:
            return self.read_user(user_id, counter_keys)  # checks the schema, reads the map
        keys = list(dict.fromkeys(counter_keys))
        commands = self._read_routed(user_id, keys)
        groups = _by_node(commands, owner)
        requests = [
            (self._async_node(address), b"".join(packed), len(packed))
            for address, (_, packed) in groups.items()
        ]
        try:
            try:
                parts = await asyncio.gather(*(c.submit(p, n) for c, p, n in requests))
            except redis.ConnectionError:  # a socket lost since its last use: once, anew
                parts = await asyncio.gather(*(c.submit(p, n) for c, p, n in requests))
        except redis.RedisError as exc:
            self._owner_stale = True
            raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {exc}") from exc
        replies = _merge(groups, parts, len(commands))
        for reply in replies:
            if isinstance(reply, Exception):
                if str(reply).startswith(RETRYABLE):
                    return self.read_user(user_id, keys)  # refreshes the map, follows ASK
                raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {reply}")
        return _user_state(user_id, keys, replies)

    def _async_node(self, address: str) -> AsyncRespConnections:
        conns = self._async_nodes.get(address)
        if conns is None:
            node = self._node(address)
            assert isinstance(node, RespConnections)
            conns = self._async_nodes.setdefault(address, AsyncRespConnections(node))
        return conns

    def _read_routed(self, user_id: str, keys: Sequence[str]) -> list[tuple[int, bytes]]:
        prefix = self.prefix
        commands = [*_user_read(prefix, user_id, self._last_recent)]
        commands += [_counter_read(prefix, key) for key in keys]
        return commands

    # -- events ------------------------------------------------------------------------------------
    def record_events(
        self,
        events: Sequence[StoredEvent],
        deltas: Sequence[Sequence[CounterDelta]] | None = None,
    ) -> list[bool]:
        per_event = check_batch(events, deltas)
        for ev_deltas in per_event:
            delta_rows(ev_deltas, 0)  # refuse bad deltas before anything is written
        results: list[bool] = []
        step = self.settings.write_batch
        for start in range(0, len(events), step):
            chunk = list(zip(events[start : start + step], per_event[start : start + step],
                             strict=True))  # fmt: skip
            results += self._call(lambda chunk=chunk: self._record_chunk(chunk))  # type: ignore[misc]
        return results

    def _record_chunk(self, chunk: list[tuple[StoredEvent, list[CounterDelta]]]) -> list[bool]:
        s = self.settings
        prefix = self.prefix
        log_slot = self._log_slots["event"]
        stream = self._stream["event"]
        n_fields = str(2 * len(EVENT_FIELDS))
        # slot -> its entries, each [event index, keys (marker first), args (ops count first)];
        # an event's parts in one slot share one entry (and its marker)
        per_slot: dict[int, list[list[Any]]] = {}

        def entry(slot: int, index: int, event_id: str) -> list[Any]:
            entries = per_slot.get(slot)
            if entries is None:
                entries = per_slot[slot] = []
            elif entries[-1][0] == index:  # events are added in order
                return entries[-1]
            found = [index, [prefix + "ok:{" + slot_tag(slot) + "}" + event_id], [0]]
            entries.append(found)
            return found

        for index, (ev, ev_deltas) in enumerate(chunk):
            event_id = ev.event_id
            fields: list[str] = ["x", n_fields]
            for name in EVENT_FIELDS:
                fields += [name, str(getattr(ev, name))]
            part = entry(log_slot, index, event_id)
            part[1].append(stream)
            part[2] += fields
            part[2][0] += 1
            recent = recent_key(prefix, ev.user_id)
            row = dumps([event_id, ev.item_id, ev.type, int(ev.timestamp_ms), ev.request_id,
                         ev.variant_id])  # fmt: skip
            part = entry(key_slot(recent), index, event_id)
            part[1].append(recent)
            part[2] += ["r", row]
            part[2][0] += 1
            for key, fld, amount, _ in delta_rows(ev_deltas, 0):
                counter, slot = _counter_slot(prefix, key)
                part = entry(slot, index, event_id)
                part[1].append(counter)
                part[2] += ["z", fld, repr(amount)]
                part[2][0] += 1
        head = (b"EVALSHA", self._scripts["events"][1])
        settings_args = [str(v) for v in (s.recent_events_cap, s.recent_events_ttl_s,
                         s.event_id_ttl_s, s.log_max_len, s.counters_ttl_s)]  # fmt: skip
        commands: list[tuple[int, bytes]] = []
        log_calls: list[tuple[int, list[int]]] = []  # (command index, event indexes)
        for slot, entries in per_slot.items():
            for sub in range(0, len(entries), SCRIPT_BATCH):
                part_entries = entries[sub : sub + SCRIPT_BATCH]
                keys: list[str] = []
                args: list[str] = []
                for _, entry_keys, entry_args in part_entries:
                    keys += entry_keys
                    args.append(str(entry_args[0]))
                    args += entry_args[1:]
                if slot == log_slot:
                    log_calls.append((len(commands), [e[0] for e in part_entries]))
                packed = _pack((*head, str(len(keys)), *keys, *settings_args, *args))
                commands.append((slot, packed))
        trailer: list[bytes] = []
        if s.wait_replicas:
            wait = pack_command(b"WAIT", str(s.wait_replicas), str(s.wait_timeout_ms))
            trailer = [wait, pack_command(b"ROLE")]
        replies, trailers = self._run(commands, trailer)
        if trailer:
            for address, (acked, role) in trailers.items():
                self._check_replicated(address, int(acked), role)
        flags = [False] * len(chunk)
        for command_index, indexes in log_calls:
            for i, flag in zip(indexes, replies[command_index], strict=True):
                flags[i] = bool(flag)
        return flags

    def _check_replicated(self, address: str, acked: int, role: Any) -> None:
        """Acknowledged: WAIT saw ``wait_replicas`` replicas, or every replica the master
        has connected; a master with none acknowledges alone (counted, logged)."""
        connected = len(role[2]) if role and role[0] == "master" and len(role) > 2 else 0
        need = min(self.settings.wait_replicas, connected)
        if connected == 0:
            self.unreplicated_writes += 1
            now = time.monotonic()
            if now - self._warned.get(address, -WARN_EVERY_S) >= WARN_EVERY_S:
                self._warned[address] = now
                log.warning(
                    "feature store master %s has no replica connected: event writes are "
                    "acknowledged by it alone until one rejoins",
                    address,
                )
            return
        if acked < need:
            raise redis.TimeoutError(
                f"{address}: the write reached {acked} of {need} replicas within "
                f"{self.settings.wait_timeout_ms} ms (not acknowledged; event ids make a "
                f"retry safe)"
            )

    # -- counters ----------------------------------------------------------------------------------
    def incr_counters(self, deltas: Sequence[CounterDelta]) -> None:
        rows = delta_rows(deltas, 0)
        if not rows:
            return
        ttl = self.settings.counters_ttl_s
        commands = []
        for key, fld, amount, _ in rows:
            full = self._k("cz:" + key)
            slot = key_slot(full)
            commands.append((slot, pack_command(b"ZINCRBY", full, repr(amount), fld)))
            if ttl:
                commands.append((slot, pack_command(b"EXPIRE", full, str(ttl))))
        self._call(lambda: self._run(commands))

    def get_counters(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        commands = [_counter_read(self.prefix, key) for key in wanted]
        replies = self._call(lambda: self._read(commands))
        return dict(zip(wanted, map(dict, replies), strict=True))

    # -- logs --------------------------------------------------------------------------------------
    def log_exposures(self, records: Sequence[ExposureRecord]) -> None:
        stream = self._stream["exposure"]
        log_slot = self._log_slots["exposure"]
        xadd = (b"XADD", stream, b"MAXLEN", b"~", str(self.settings.log_max_len), b"*", b"d")
        ttl = str(self.settings.event_id_ttl_s)
        for start in range(0, len(records), EXPOSURE_CHUNK):
            commands: list[tuple[int, bytes]] = []
            for r in records[start : start + EXPOSURE_CHUNK]:
                row = exposure_json(r)
                commands.append((log_slot, _pack((*xadd, row))))
                if r.item_ids:
                    key = self._shown_key(r.request_id)
                    commands.append((key_slot(key), _pack((b"SET", key, row, b"EX", ttl))))
            self._call(lambda commands=commands: self._run(commands))  # type: ignore[misc]

    def _served(self, request_ids: Sequence[str], decode: Callable[[Any], T]) -> dict[str, T]:
        """``decode(row)`` of each known request's ``sx:{request_id}`` row (one slot each)."""
        ids = [str(r) for r in dict.fromkeys(request_ids) if r]
        if not ids:
            return {}
        keys = [self._shown_key(r) for r in ids]
        commands = [(key_slot(k), pack_command(b"GET", k)) for k in keys]
        replies = self._call(lambda: self._read(commands))
        return {r: decode(row) for r, row in zip(ids, replies, strict=True) if row}

    def _round_trip(self, packed: bytes, n_replies: int) -> list[Any]:
        raise NotImplementedError(
            "RedisClusterStore routes each command by its slot (_run); a joined one-node "
            "pipeline cannot be sent to a cluster"
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def ping(self) -> float:
        """The slowest master's PING (every master must answer)."""

        def ping_all() -> None:
            if self._owner is None:
                self._refresh(force=True)
            owner = self._owner
            assert owner is not None
            masters = list(dict.fromkeys(owner))
            commands = [(owner.index(m), pack_command(b"PING")) for m in masters]
            self._run(commands)

        start = time.perf_counter()
        self._call(ping_all)
        return time.perf_counter() - start

    def masters(self) -> list[str]:
        """``host:port`` of every master in the current slot map (refreshed now)."""
        self._call(lambda: self._refresh(force=True))
        return list(dict.fromkeys(self._owner or []))

    def close(self) -> None:
        for conns in list(self._nodes.values()):
            conns.close()
        for async_conns in list(self._async_nodes.values()):
            async_conns.close()
        if self._cluster is not None:
            self._cluster.close()

    def __repr__(self) -> str:
        return f"RedisClusterStore({public_url(self.url)!r}, prefix={self.prefix!r})"


def _split(replies: list[Any], asked: list[bool], n_trailer: int) -> tuple[list[Any], list[Any]]:
    """A node's replies without the ASKING acknowledgements, and its trailer's apart."""
    tail = replies[len(replies) - n_trailer :] if n_trailer else []
    body = replies[: len(replies) - n_trailer] if n_trailer else replies
    if True in asked:
        own, pos = [], 0
        for was_asked in asked:
            pos += was_asked  # skip the +OK of ASKING
            own.append(body[pos])
            pos += 1
        body = own
    return body, tail


def _slot_owners(reply: Any, default_host: str) -> list[str] | None:
    """``CLUSTER SLOTS`` as a slot -> ``host:port`` list; None while a slot has no master."""
    owner: list[str | None] = [None] * SLOTS
    for entry in reply:
        first, last, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0] or default_host
        address = f"{host}:{int(master[1])}"
        owner[first : last + 1] = [address] * (last - first + 1)
    if any(a is None for a in owner):
        return None
    return owner  # type: ignore[return-value]


def _sha1(body: str) -> str:
    import hashlib

    return hashlib.sha1(body.encode()).hexdigest()  # how Redis names a script (EVALSHA)
