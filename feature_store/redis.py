"""Redis backend: the production store shared by every server replica.

Key schema (``P`` = the ``prefix`` setting, default ``recsvc:``; ids are used verbatim):

==========================  =======  =============================================  ==========
key                         type     holds                                          bounded by
==========================  =======  =============================================  ==========
``P u:{user_id}``           hash     user profile (region, other features); the     rewrite
                                     braces are a real hash tag, as in ``r:``
``P i:item_id``             hash     item attributes (regions, other features)      rewrite
``P r:{user_id}``           list     recent events, newest first, each a JSON       LTRIM cap,
                                     ``[event_id, item_id, type, timestamp_ms,      EXPIRE
                                     request_id, variant_id]``                      (events TTL)
``P cz:counter_key``        zset     bandit counters: member = field, score =       optional
                                     value (ZINCRBY, doubles)                       EXPIRE
``P seen:event_id``         string   idempotency marker (one node; a cluster uses   EXPIRE
                                     ``ok:`` markers, ``feature_store/redis_cluster.py``)
``P log:event``             stream   event log, one field per StoredEvent column    MAXLEN ~
``P log:exposure``          stream   exposure log, field ``d`` = JSON row           MAXLEN ~
``P doc:namespace``         hash     name -> JSON document                          —
``P sx:{request_id}``       string   the request's exposure row (JSON, as in the    EXPIRE
                                     log): which variant each item showed; the      (id TTL)
                                     braces are a real hash tag (one slot per
                                     request). Written with the exposure log.
``P schema``                string   the key schema's version                       one key
                                     (:data:`SCHEMA_VERSION`)
==========================  =======  =============================================  ==========

Braces in a key name are literal and are Redis Cluster hash tags: the profile and the recent
events of one user hash to one slot (one node, one round trip on a cluster), and each
request's exposure row to its own. The other ids are used verbatim after their ``kind:``.
The layout is the same on one node and on a cluster (``feature_store/redis_cluster.py``
adds its per-slot idempotency markers), so data moves between them by copying keys.

``P schema`` is set at open when absent; a prefix holding another version is refused
(:class:`FeatureStoreSchemaError`) rather than read with the wrong layout. When Redis is
down at open the check is made by the first call that reaches it, so a server still
starts (degraded) and recovers as with any outage.

Latency: ``read_user`` is ONE pipelined round trip (HGETALL + LRANGE + one ZRANGE
WITHSCORES per counter key) on a RESP3 connection, so hiredis hands back the profile as a
``dict[str, str]`` and every counter as ``(field, float)`` pairs, built in C; the recent
events stay undecoded JSON until used (:class:`~feature_store.codec.RecentEvents`).
Counters are sorted sets rather than hashes for that reason: a RESP3 score is a double on
the wire, a hash value a string that Python would have to parse field by field; and
ZINCRBY sums in doubles as SQLite does, where HINCRBYFLOAT uses long doubles. Redis >= 6
(RESP3). The read path has its own connections (``feature_store/resp.py``, up to
``pool_size`` of them, besides redis-py's pool of ``pool_size`` for everything else).
``record_events`` is one EVALSHA per batch of events, atomic and idempotent
(``SET NX EX`` on the event id gates the LPUSH/LTRIM/EXPIRE, XADD and ZINCRBYs).

Faults: every socket operation has a bounded timeout (``connect_timeout_s``,
``socket_timeout_s``) and a connection error is retried at most once on a fresh
connection (that is how a stale pooled connection heals after a Redis restart). Anything
else surfaces as :class:`FeatureStoreUnavailable` at once; the pool reconnects on the next
call, so the store recovers by itself.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_store.base import (
    CounterDelta,
    ExposureRecord,
    LogKind,
    OnlineStore,
    StoredEvent,
    UserState,
)
from feature_store.codec import (
    EVENT_FIELDS,
    RecentEvents,
    check_batch,
    check_doc_name,
    check_kind,
    delta_rows,
    dumps,
    exposure_json,
    served_map,
    served_row,
    str_mapping,
    write_parquet,
)
from feature_store.config import StoreSettings
from feature_store.errors import (
    FeatureStoreConfigError,
    FeatureStoreSchemaError,
    FeatureStoreUnavailable,
)
from feature_store.resp import AsyncRespConnections, RespConnections, pack_command

T = TypeVar("T")
SCHEMA_VERSION = "2"  # value of ``P schema``; bump when a key's layout changes (2: hash tags)
LOG_PAGE = 1000
SCRIPT_BATCH = 50  # events per EVALSHA: ~1 ms of Redis time each
EXPOSURE_CHUNK = 256  # exposure records per round trip

# KEYS[1] = event stream; then per event: seen key, recent key, one key per counter delta.
# ARGV[1..5] = cap, recent TTL, id TTL, stream MAXLEN, counter TTL (0 = none)
# ARGV[6] = JSON [[recent entry, [stream field, value, ...], [counter field, amount, ...]], ...]
RECORD_EVENTS_LUA = """
local cap = tonumber(ARGV[1])
local recent_ttl = tonumber(ARGV[2])
local id_ttl = tonumber(ARGV[3])
local maxlen = tonumber(ARGV[4])
local counter_ttl = tonumber(ARGV[5])
local batch = cjson.decode(ARGV[6])
local out = {}
local k = 2
for i = 1, #batch do
  local ev = batch[i]
  local seen, recent, deltas = KEYS[k], KEYS[k + 1], ev[3]
  local first = k + 2
  k = first + #deltas / 2
  if redis.call('SET', seen, '1', 'NX', 'EX', id_ttl) then
    redis.call('LPUSH', recent, ev[1])
    redis.call('LTRIM', recent, 0, cap - 1)
    redis.call('EXPIRE', recent, recent_ttl)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ev[2]))
    for j = 1, #deltas, 2 do
      local key = KEYS[first + (j - 1) / 2]
      redis.call('ZINCRBY', key, deltas[j + 1], deltas[j])
      if counter_ttl > 0 then redis.call('EXPIRE', key, counter_ttl) end
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


class RedisStore(OnlineStore):
    """:class:`OnlineStore` on one Redis server (pooled connections, bounded timeouts)."""

    def __init__(self, url: str, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self.url = url
        self.prefix = self.settings.prefix
        self._pool = self._make_pool(url)
        self._reads = self._make_reads(url)
        self._async_reads = (
            AsyncRespConnections(self._reads) if isinstance(self._reads, RespConnections) else None
        )
        self.async_reads = self._async_reads is not None
        self._client = redis.Redis(connection_pool=self._pool)
        self._record_script = self._client.register_script(RECORD_EVENTS_LUA)
        self._stream = {"event": self._k("log:event"), "exposure": self._k("log:exposure")}
        self._last_recent = str(self.settings.recent_events_cap - 1).encode()
        self._schema_checked = False
        try:
            self._check_schema()
        except FeatureStoreUnavailable:
            pass  # Redis down: the first call that reaches it checks (see _call)
        except BaseException:
            self.close()
            raise

    def _check_schema(self) -> None:
        """Set ``P schema`` if absent; raise FeatureStoreSchemaError if it holds another
        version. One round trip."""
        key = self._k("schema")

        def check() -> Any:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(key, SCHEMA_VERSION, nx=True)
            pipe.get(key)
            return pipe.execute()[1]

        try:
            found = check()
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {exc}") from exc
        if found != SCHEMA_VERSION.encode():
            raise FeatureStoreSchemaError(
                f"feature store {public_url(self.url)} (prefix {self.prefix!r}): key {key!r} "
                f"says schema version {_text(found)!r}, this code reads version "
                f"{SCHEMA_VERSION}; use the recsvc release that wrote it, or give this one "
                f"another prefix (?prefix=...) or DB"
            )
        self._schema_checked = True

    def _make_pool(self, url: str, **options: Any) -> redis.BlockingConnectionPool:
        parts = urlsplit(url)
        bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise FeatureStoreConfigError(
                f"feature store URL {url!r}: the Redis DB must be a number (redis://HOST:PORT/DB)"
            )
        s = self.settings
        try:
            pool = redis.BlockingConnectionPool.from_url(
                bare,
                max_connections=s.pool_size,
                timeout=s.connect_timeout_s + s.socket_timeout_s,  # wait for a free connection
                socket_connect_timeout=s.connect_timeout_s,
                socket_timeout=s.socket_timeout_s,
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                **options,
            )
        except ValueError as exc:
            raise FeatureStoreConfigError(f"feature store URL {url!r}: {exc}") from None
        return pool

    def _make_reads(self, url: str) -> RespConnections | PoolReads:
        """Connections of the request read: our own RESP3 sockets for plain TCP; TLS and
        unix sockets go through a redis-py RESP3 pool (same replies, more overhead)."""
        s = self.settings
        kw = self._pool.connection_kwargs
        if self._pool.connection_class is not redis.Connection:
            return PoolReads(self._make_pool(url, protocol=3, decode_responses=True))
        return RespConnections(
            kw.get("host", "localhost"),
            int(kw.get("port", 6379)),
            int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            connect_timeout_s=s.connect_timeout_s,
            socket_timeout_s=s.socket_timeout_s,
            limit=s.pool_size,
        )

    def _k(self, suffix: str) -> str:
        return self.prefix + suffix

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one Redis operation. Every Redis error becomes FeatureStoreUnavailable: besides
        timeouts and refused connections, OOM (maxmemory), READONLY (a failover in progress)
        and LOADING are conditions a caller should degrade on, not crash."""
        if not self._schema_checked:
            self._check_schema()
        try:
            return fn()
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {exc}") from exc

    # -- profiles and items -------------------------------------------------------------------
    def write_user_profiles(self, profiles: Iterable[tuple[str, Mapping[str, str]]]) -> int:
        return self._write_hashes(profile_key, "user_id", profiles)

    def write_item_attributes(self, items: Iterable[tuple[str, Mapping[str, str]]]) -> int:
        return self._write_hashes(item_key, "item_id", items)

    def _write_hashes(
        self,
        key_of: Callable[[str, str], str],
        what: str,
        rows: Iterable[tuple[str, Mapping[str, str]]],
    ) -> int:
        total = 0
        batch: list[tuple[str, dict[str, str]]] = []
        for row_id, values in rows:
            if not row_id:
                raise ValueError(f"{what}: must not be empty")
            key = key_of(self.prefix, str(row_id))
            batch.append((key, str_mapping(values, f"{what} {row_id!r}")))
            if len(batch) >= self.settings.write_batch:
                total += self._replace_hashes(batch)
                batch = []
        if batch:
            total += self._replace_hashes(batch)
        return total

    def _replace_hashes(self, batch: list[tuple[str, dict[str, str]]]) -> int:
        def write() -> None:
            pipe = self._client.pipeline(transaction=True)  # a reader never sees half a row
            for key, values in batch:
                pipe.delete(key)
                if values:
                    pipe.hset(key, mapping=values)  # type: ignore[arg-type]
            pipe.execute()

        self._call(write)
        return len(batch)

    def get_item_attributes(self, item_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        ids = list(dict.fromkeys(item_ids))

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            for item_id in ids:
                pipe.hgetall(item_key(self.prefix, item_id))
            return pipe.execute()

        rows = self._call(read) if ids else []
        return {i: decode_hash(h) for i, h in zip(ids, rows, strict=False) if h}

    # -- the request read -----------------------------------------------------------------------
    def read_user(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        keys = list(dict.fromkeys(counter_keys))
        packed = self._read_commands(user_id, keys)
        replies = self._call(lambda: self._round_trip(b"".join(packed), len(packed)))
        return _user_state(user_id, keys, replies)

    async def read_user_async(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        """:meth:`read_user` on the event loop's pipelined connection (plain TCP; TLS and
        unix sockets read synchronously): the loop runs other requests during the round
        trip instead of blocking in ``recv``."""
        if self._async_reads is None or not self._schema_checked:
            return self.read_user(user_id, counter_keys)  # the latter checks the schema first
        keys = list(dict.fromkeys(counter_keys))
        packed = self._read_commands(user_id, keys)
        try:
            replies = await self._async_reads.round_trip(b"".join(packed), len(packed))
        except redis.RedisError as exc:
            raise FeatureStoreUnavailable(f"feature store {public_url(self.url)}: {exc}") from exc
        return _user_state(user_id, keys, replies)

    def _read_commands(self, user_id: str, keys: Sequence[str]) -> list[bytes]:
        """The read's packed commands: profile, recent events, then one per counter key."""
        prefix = self.prefix
        packed = [
            pack_command(b"HGETALL", profile_key(prefix, user_id)),
            pack_command(b"LRANGE", recent_key(prefix, user_id), b"0", self._last_recent),
        ]
        packed += [pack_zrange(prefix, key) for key in keys]
        return packed

    def _round_trip(self, packed: bytes, n_replies: int) -> list[Any]:
        """Send pre-packed commands and read their replies: one round trip without
        redis-py's per-command bookkeeping, which costs more than the network on this path
        (docs/benchmarks/feature_store.md)."""
        return self._reads.round_trip(packed, n_replies)

    # -- events ---------------------------------------------------------------------------------
    def record_events(
        self,
        events: Sequence[StoredEvent],
        deltas: Sequence[Sequence[CounterDelta]] | None = None,
    ) -> list[bool]:
        per_event = check_batch(events, deltas)
        s = self.settings
        settings_args: list[int | str] = [
            s.recent_events_cap,
            s.recent_events_ttl_s,
            s.event_id_ttl_s,
            s.log_max_len,
            s.counters_ttl_s,
        ]
        results: list[bool] = []
        step = s.write_batch
        for start in range(0, len(events), step):
            end = start + step
            chunk = list(zip(events[start:end], per_event[start:end], strict=True))

            def write(chunk: list[tuple[StoredEvent, list[CounterDelta]]] = chunk) -> list[Any]:
                # Short scripts (Redis runs one at a time, so a long one stalls every
                # reader), pipelined so a big batch is still one round trip (plus the
                # pipeline's SCRIPT EXISTS check, hence the direct call for small batches).
                if len(chunk) <= SCRIPT_BATCH:
                    keys, payload = self._record_args(chunk)
                    return [self._record_script(keys, [*settings_args, payload])]
                pipe = self._client.pipeline(transaction=False)
                for sub in range(0, len(chunk), SCRIPT_BATCH):
                    keys, payload = self._record_args(chunk[sub : sub + SCRIPT_BATCH])
                    self._record_script(keys, [*settings_args, payload], client=pipe)
                return pipe.execute()

            for flags in self._call(write):
                results.extend(bool(f) for f in flags)
        return results

    def _record_args(
        self, chunk: list[tuple[StoredEvent, list[CounterDelta]]]
    ) -> tuple[list[str], str]:
        keys = [self._stream["event"]]
        batch = []
        for ev, ev_deltas in chunk:
            keys.append(self._k("seen:" + ev.event_id))
            keys.append(recent_key(self.prefix, ev.user_id))
            recent = dumps(
                [
                    ev.event_id,
                    ev.item_id,
                    ev.type,
                    int(ev.timestamp_ms),
                    ev.request_id,
                    ev.variant_id,
                ]
            )
            fields = []
            for name in EVENT_FIELDS:
                fields += [name, str(getattr(ev, name))]
            flat: list[str] = []
            for key, fld, amount, _ in delta_rows(ev_deltas, 0):
                keys.append(self._k("cz:" + key))
                flat += [fld, repr(amount)]
            batch.append([recent, fields, flat])
        return keys, dumps(batch)

    # -- counters -------------------------------------------------------------------------------
    def incr_counters(self, deltas: Sequence[CounterDelta]) -> None:
        rows = delta_rows(deltas, 0)
        if not rows:
            return
        ttl = self.settings.counters_ttl_s

        def write() -> None:
            pipe = self._client.pipeline(transaction=True)  # MULTI/EXEC: all or nothing
            for key, fld, amount, _ in rows:
                pipe.zincrby(self._k("cz:" + key), amount, fld)
                if ttl:
                    pipe.expire(self._k("cz:" + key), ttl)
            pipe.execute()

        self._call(write)

    def get_counters(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        packed = b"".join(pack_zrange(self.prefix, key) for key in wanted)
        replies = self._call(lambda: self._round_trip(packed, len(wanted)))
        return dict(zip(wanted, map(dict, replies), strict=True))

    # -- logs -----------------------------------------------------------------------------------
    def log_exposures(self, records: Sequence[ExposureRecord]) -> None:
        """XADD of each row (MAXLEN ~) and, per request that showed items, ``SET
        sx:{request_id} <the same row> EX ttl``: pre-packed commands on the read path's RESP
        connections, one round trip per ``EXPOSURE_CHUNK`` records (redis-py's pipeline
        spent ~3x the CPU on per-command bookkeeping; packing an HSET of every item and
        variant cost ~17 µs per request, the SET of the already encoded row ~2;
        docs/benchmarks/serving.md)."""
        xadd = (b"XADD", self._stream["exposure"], b"MAXLEN", b"~",
                str(self.settings.log_max_len), b"*", b"d")  # fmt: skip
        ttl = str(self.settings.event_id_ttl_s)
        for start in range(0, len(records), EXPOSURE_CHUNK):
            parts: list[bytes] = []
            for r in records[start : start + EXPOSURE_CHUNK]:
                row = exposure_json(r)
                parts.append(pack_command(*xadd, row))
                if r.item_ids:  # what each request showed, for RecordEvents' check
                    key = self._shown_key(r.request_id)
                    parts.append(pack_command(b"SET", key, row, b"EX", ttl))
            self._call(functools.partial(self._round_trip, b"".join(parts), len(parts)))

    def read_log(
        self, kind: LogKind, since_ms: int | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        stream = self._stream[check_kind(kind)]
        start = "-"
        remaining = -1 if limit is None else int(limit)
        while remaining != 0:
            xrange = functools.partial(self._client.xrange, stream, start, "+", LOG_PAGE)
            page: list[tuple[bytes, dict[bytes, bytes]]] = self._call(xrange)  # type: ignore[arg-type]
            for _entry_id, fields in page:
                row = decode_log_row(kind, fields)
                if since_ms is not None and row["timestamp_ms"] < since_ms:
                    continue
                yield row
                remaining -= 1
                if remaining == 0:
                    return
            if len(page) < LOG_PAGE:
                return
            start = "(" + page[-1][0].decode()

    def export_log(self, kind: LogKind, path: Path) -> int:
        return write_parquet(self.read_log(check_kind(kind)), kind, Path(path))

    # -- documents ------------------------------------------------------------------------------
    def put_document(self, namespace: str, name: str, doc: Mapping[str, Any]) -> None:
        check_doc_name(namespace, name)
        body = dumps(dict(doc))
        self._call(lambda: self._client.hset(self._k("doc:" + namespace), name, body))

    def get_document(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self._call(lambda: self._client.hget(self._k("doc:" + namespace), name))
        return None if body is None else json.loads(body)  # type: ignore[arg-type]

    def list_documents(self, namespace: str) -> dict[str, dict[str, Any]]:
        rows: dict[bytes, bytes] = self._call(
            lambda: self._client.hgetall(self._k("doc:" + namespace))  # type: ignore[arg-type,return-value]
        )
        return {k.decode(): json.loads(v) for k, v in sorted(rows.items())}

    def delete_document(self, namespace: str, name: str) -> bool:
        n = self._call(lambda: self._client.hdel(self._k("doc:" + namespace), name))
        return bool(n)

    # -- lifecycle ------------------------------------------------------------------------------
    def ping(self) -> float:
        start = time.perf_counter()
        self._call(self._client.ping)
        return time.perf_counter() - start

    def close(self) -> None:
        self._pool.disconnect()
        self._reads.close()
        if self._async_reads is not None:
            self._async_reads.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    # -- what each request showed ---------------------------------------------------------------
    def _shown_key(self, request_id: str) -> str:
        return self._k("sx:{" + request_id + "}")

    def served_variants(self, request_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return self._served(request_ids, served_map)

    def served_exposures(self, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._served(request_ids, served_row)

    def _served(self, request_ids: Sequence[str], decode: Callable[[bytes], T]) -> dict[str, T]:
        """``decode(row)`` of each known request's ``sx:`` exposure row."""
        ids = [str(r) for r in dict.fromkeys(request_ids) if r]
        if not ids:
            return {}
        packed = b"".join(pack_command(b"GET", self._shown_key(r)) for r in ids)
        replies = self._call(lambda: self._round_trip(packed, len(ids)))
        return {r: decode(row) for r, row in zip(ids, replies, strict=True) if row}


class PoolReads:
    """:class:`~feature_store.resp.RespConnections`' interface over a redis-py RESP3 pool
    (TLS, unix sockets)."""

    def __init__(self, pool: redis.BlockingConnectionPool) -> None:
        self.pool = pool

    def round_trip(self, packed: bytes, n_replies: int) -> list[Any]:
        for attempt in (1, 2):
            conn = self.pool.get_connection()
            try:
                conn.send_packed_command([packed], check_health=False)
                return [conn.read_response() for _ in range(n_replies)]
            except redis.ConnectionError:
                conn.disconnect()  # a stale socket (Redis restarted): retry once, fresh
                if attempt == 2:
                    raise
            except BaseException:
                conn.disconnect()  # unread replies would poison the next request
                raise
            finally:
                self.pool.release(conn)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.pool.disconnect()


def profile_key(prefix: str, user_id: str) -> str:
    """``P u:{user_id}``: the braces make the user id the hash tag (one slot per user)."""
    return prefix + "u:{" + user_id + "}"


def recent_key(prefix: str, user_id: str) -> str:
    """``P r:{user_id}``: in the profile's slot."""
    return prefix + "r:{" + user_id + "}"


def item_key(prefix: str, item_id: str) -> str:
    return prefix + "i:" + item_id


def _user_state(
    user_id: str, keys: list[str], replies: list[Any]
) -> tuple[UserState, dict[str, dict[str, float]]]:
    """``read_user``'s answer from its replies (profile, recent events, counters)."""
    events = RecentEvents(user_id, raw=replies[1])
    counters = dict(zip(keys, map(dict, replies[2:]), strict=True))
    return UserState(profile=replies[0], recent_events=events), counters


def public_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@functools.lru_cache(maxsize=65_536)
def pack_zrange(prefix: str, key: str) -> bytes:
    """Counter keys recur on every request for the same items: pack each once."""
    return pack_command(b"ZRANGE", prefix + "cz:" + key, b"0", b"-1", b"WITHSCORES")


def hash_items(raw: Mapping[bytes, bytes] | list[bytes]) -> Iterable[tuple[bytes, bytes]]:
    """HGETALL replies are maps under RESP3 and flat lists under RESP2."""
    if isinstance(raw, Mapping):
        return raw.items()
    return zip(raw[0::2], raw[1::2], strict=False)


def decode_hash(raw: Mapping[bytes, bytes] | list[bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in hash_items(raw)}


def decode_log_row(kind: LogKind, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    if kind == "exposure":
        row: dict[str, Any] = json.loads(fields[b"d"])
        return row
    row = {name: fields.get(name.encode(), b"").decode() for name in EVENT_FIELDS}
    row["timestamp_ms"] = int(row["timestamp_ms"])
    return row
