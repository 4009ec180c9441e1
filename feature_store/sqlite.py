"""Embedded SQLite backend: one real file in WAL mode, shared by every process on the host.

Concurrency: readers never block writers (WAL); writers take the lock with ``BEGIN
IMMEDIATE`` and wait up to ``busy_timeout_ms`` for each other, so several server
processes and a CLI can share one file. Each thread has its own connection (sqlite3
connections are not shareable), opened lazily and reopened after a fork.

Tables (all ``WITHOUT ROWID`` where a natural key exists, so point reads are one B-tree
descent):

- ``profiles(user_id, body)`` / ``items(item_id, body)``: JSON feature maps;
- ``recent_events(user_id, seq, ...)``: per-user list, clustered by user, newest = highest
  ``seq``; capped at ``recent_events_cap`` per user, expired after ``recent_events_ttl_s``;
- ``counters(key, field, value)``: bandit statistics, ``value = value + ?`` upserts;
- ``seen_events(event_id, seen_ms)``: idempotency window of ``event_id_ttl_s``;
- ``event_log`` / ``exposure_log``: append-only, trimmed to ``log_max_len`` rows;
- ``documents(namespace, name, body)``: small shared JSON documents;
- ``served_requests(request_id, served_ms, body)``: which variant each logged request showed
  per item (``body`` = the request's exposure row JSON, whose ``item_ids``/``variant_ids``
  give the map; one row per request, written with the exposure log, kept
  ``event_id_ttl_s``), so an event can be checked against what was served.

The file's schema version is SQLite's ``PRAGMA user_version`` (0 in a new file): set to
:data:`SCHEMA_VERSION` when the tables are created, and a file carrying another version is
refused at open (:class:`FeatureStoreSchemaError`) rather than read with the wrong layout.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from feature_store.base import (
    CounterDelta,
    ExposureRecord,
    LogKind,
    OnlineStore,
    StoredEvent,
    UserState,
)
from feature_store.codec import (
    RecentEvents,
    check_batch,
    check_doc_name,
    check_kind,
    delta_rows,
    dumps,
    event_row,
    exposure_json,
    merged_rows,
    served_map,
    served_row,
    str_mapping,
    write_parquet,
)
from feature_store.config import StoreSettings
from feature_store.errors import (
    FeatureStoreConfigError,
    FeatureStoreError,
    FeatureStoreSchemaError,
    FeatureStoreUnavailable,
)

SCHEMA_VERSION = 1
HOUSEKEEPING_EVERY_S = 60.0
MAX_IN_PARAMS = 500  # keep ``IN (?, ...)`` lists well under SQLite's variable limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (user_id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent_events (
    user_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL, item_id TEXT NOT NULL,
    type TEXT NOT NULL, timestamp_ms INTEGER NOT NULL, request_id TEXT NOT NULL,
    variant_id TEXT NOT NULL, recorded_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recent_events_recorded ON recent_events (recorded_ms);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL, field TEXT NOT NULL, value REAL NOT NULL,
    updated_ms INTEGER NOT NULL, PRIMARY KEY (key, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_events (
    event_id TEXT PRIMARY KEY, seen_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_events_seen ON seen_events (seen_ms);
CREATE TABLE IF NOT EXISTS event_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, user_id TEXT NOT NULL,
    item_id TEXT NOT NULL, type TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL, variant_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exposure_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, timestamp_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    namespace TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL, PRIMARY KEY (namespace, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS served_requests (
    request_id TEXT PRIMARY KEY, served_ms INTEGER NOT NULL, body TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS served_requests_at ON served_requests (served_ms);
"""

# Profile and recent events in one statement (its own read snapshot): a single execute costs
# half of BEGIN + two SELECTs + COMMIT. The profile row is the one with a NULL seq; events
# carry their seq so their order never depends on how SQLite interleaves the two halves.
SQL_READ_USER = (
    "SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, body FROM profiles WHERE user_id = ?1"
    " UNION ALL SELECT * FROM (SELECT seq, event_id, item_id, type, timestamp_ms, request_id,"
    " variant_id, NULL FROM recent_events WHERE user_id = ?1 AND recorded_ms >= ?2"
    " ORDER BY seq DESC LIMIT ?3)"
)
SQL_COUNTER_UPSERT = (
    "INSERT INTO counters (key, field, value, updated_ms) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key, field) DO UPDATE SET value = value + excluded.value,"
    " updated_ms = excluded.updated_ms"
)
SQL_TRIM_RECENT = (
    "DELETE FROM recent_events WHERE user_id = ? AND seq <= (SELECT seq FROM recent_events"
    " WHERE user_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"
)
T = TypeVar("T")


_PROFILES: dict[str, dict[str, str]] = {}
_MAX_PROFILES = 4096


def _profile(body: str) -> dict[str, str]:
    """``json.loads(body)``, memoized by body: profiles are a few categorical features, so
    most users share one of a few hundred bodies (a copy is returned: callers may edit)."""
    parsed = _PROFILES.get(body)
    if parsed is None:
        parsed = json.loads(body)
        if len(_PROFILES) >= _MAX_PROFILES:
            _PROFILES.clear()
        _PROFILES[body] = parsed
    return dict(parsed)


def _seq(row: Sequence[Any]) -> int:
    return int(row[0])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SQLiteStore(OnlineStore):
    """:class:`OnlineStore` on one SQLite file (WAL). Thread- and multi-process-safe."""

    def __init__(self, path: str | Path, settings: StoreSettings | None = None) -> None:
        self.path = str(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise FeatureStoreConfigError(
                f"feature store SQLite path {self.path!r}: needs a real file (several threads "
                f"and processes share it)"
            )
        self.settings = settings or StoreSettings()
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._last_housekeeping = 0.0
        self._init_schema()

    # -- connections --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.settings.busy_timeout_ms / 1000,
            isolation_level=None,  # explicit BEGIN/COMMIT; autocommit otherwise
            check_same_thread=False,  # only close() touches it from another thread
            cached_statements=256,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
        conn.execute("PRAGMA foreign_keys = OFF")
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        if self._closed:
            raise FeatureStoreError(f"feature store {self.url} is closed")
        try:
            conn = self._connect()
        except sqlite3.OperationalError as exc:  # locked, unreadable directory, ...
            raise FeatureStoreUnavailable(f"feature store {self.url}: {exc}") from exc
        except sqlite3.Error as exc:  # not a database, corrupt
            raise FeatureStoreConfigError(
                f"feature store SQLite file {self.path!r}: cannot open ({exc})"
            ) from exc
        local.conn, local.pid = conn, os.getpid()
        with self._lock:
            self._connections.append(conn)
        return conn

    def _init_schema(self) -> None:
        try:
            self._open_schema()
        except BaseException:
            self.close()  # the caller never gets the store: release its connection now
            raise

    def _open_schema(self) -> None:
        parent = Path(self.path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise FeatureStoreConfigError(
                    f"feature store SQLite file {self.path}: cannot switch to WAL mode ({mode})"
                )
            with self._write(conn):
                self._create_tables(conn)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # another process holds the lock
                raise FeatureStoreUnavailable(f"feature store {self.url}: {exc}") from exc
            raise FeatureStoreConfigError(
                f"feature store SQLite file {self.path!r}: cannot open ({exc})"
            ) from exc
        except (sqlite3.Error, OSError) as exc:
            raise FeatureStoreConfigError(
                f"feature store SQLite file {self.path!r}: cannot open ({exc})"
            ) from exc

    def _create_tables(self, conn: sqlite3.Connection) -> None:
        """Check the file's schema version, then create what is missing (in the caller's
        write transaction, so two processes opening a new file never both create it)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version not in (0, SCHEMA_VERSION):
            raise FeatureStoreSchemaError(
                f"feature store SQLite file {self.path}: schema version {version}, this code "
                f"reads version {SCHEMA_VERSION}; open it with the recsvc release that wrote "
                f"it, or point --feature-store at a new file (profiles and items come back "
                f"with `recsvc materialize`; counters, recent events and logs start empty)"
            )
        # executescript would COMMIT our transaction; run the statements one by one.
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if version == 0:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # transactional

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction; the lock is taken up front so it never needs upgrading."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on this thread's connection; a lock wait past the timeout is typed."""
        conn = self._conn()
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise FeatureStoreUnavailable(f"feature store {self.url}: {exc}") from exc
        except sqlite3.Error as exc:
            raise FeatureStoreError(f"feature store {self.url}: {exc}") from exc

    def _write_run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def tx(conn: sqlite3.Connection) -> T:
            with self._write(conn):
                return fn(conn)

        result = self._run(tx)
        if time.monotonic() - self._last_housekeeping > HOUSEKEEPING_EVERY_S:
            self.housekeeping()
        return result

    # -- profiles and items -------------------------------------------------------------------
    def write_user_profiles(self, profiles: Iterable[tuple[str, Mapping[str, str]]]) -> int:
        return self._upsert_bodies("profiles", "user_id", profiles)

    def write_item_attributes(self, items: Iterable[tuple[str, Mapping[str, str]]]) -> int:
        return self._upsert_bodies("items", "item_id", items)

    def _upsert_bodies(
        self, table: str, key: str, rows: Iterable[tuple[str, Mapping[str, str]]]
    ) -> int:
        sql = (
            f"INSERT INTO {table} ({key}, body) VALUES (?, ?)"
            f" ON CONFLICT ({key}) DO UPDATE SET body = excluded.body"
        )
        total = 0
        batch: list[tuple[str, str]] = []

        def flush(conn: sqlite3.Connection) -> None:
            conn.executemany(sql, batch)

        for row_id, values in rows:
            if not row_id:
                raise ValueError(f"{key}: must not be empty")
            batch.append((str(row_id), dumps(str_mapping(values, f"{key} {row_id!r}"))))
            if len(batch) >= self.settings.write_batch:
                self._write_run(flush)
                total += len(batch)
                batch = []
        if batch:
            self._write_run(flush)
            total += len(batch)
        return total

    def get_item_attributes(self, item_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        ids = list(dict.fromkeys(item_ids))

        def read(conn: sqlite3.Connection) -> dict[str, dict[str, str]]:
            out: dict[str, dict[str, str]] = {}
            for chunk in chunks(ids, MAX_IN_PARAMS):
                sql = f"SELECT item_id, body FROM items WHERE item_id IN ({marks(len(chunk))})"
                for item_id, body in conn.execute(sql, chunk):
                    out[item_id] = json.loads(body)
            return out

        return self._run(read)

    # -- the request read -----------------------------------------------------------------------
    def read_user(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        since = now_ms() - self.settings.recent_events_ttl_s * 1000
        cap = self.settings.recent_events_cap

        def read(conn: sqlite3.Connection) -> tuple[UserState, dict[str, dict[str, float]]]:
            args = (user_id, since, cap)
            if counter_keys:
                conn.execute("BEGIN")  # one snapshot for profile, events and counters
                try:
                    rows = conn.execute(SQL_READ_USER, args).fetchall()
                    counters = self._read_counters(conn, counter_keys)
                finally:
                    conn.execute("COMMIT")
            else:
                rows, counters = conn.execute(SQL_READ_USER, args).fetchall(), {}
            profile: dict[str, str] = {}
            events: list[Any] = []
            for row in rows:
                if row[0] is None:
                    profile = _profile(row[7])
                else:
                    events.append(row)
            if events:  # newest first; StoredEvents are built on first use
                events.sort(key=_seq, reverse=True)
                events = [row[1:7] for row in events]
            state = UserState(profile=profile, recent_events=RecentEvents(user_id, rows=events))
            return state, counters

        return self._run(read)

    @staticmethod
    def _read_counters(
        conn: sqlite3.Connection, keys: Sequence[str]
    ) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {k: {} for k in keys}
        for chunk in chunks(list(out), MAX_IN_PARAMS):
            sql = f"SELECT key, field, value FROM counters WHERE key IN ({marks(len(chunk))})"
            for key, fld, value in conn.execute(sql, chunk):
                out[key][fld] = value
        return out

    # -- events ---------------------------------------------------------------------------------
    def record_events(
        self,
        events: Sequence[StoredEvent],
        deltas: Sequence[Sequence[CounterDelta]] | None = None,
    ) -> list[bool]:
        per_event = check_batch(events, deltas)
        results: list[bool] = []
        step = self.settings.write_batch
        for start in range(0, len(events), step):
            end = start + step
            chunk = list(zip(events[start:end], per_event[start:end], strict=True))
            results.extend(self._write_run(functools.partial(self._record, chunk=chunk)))
        return results

    def _record(
        self, conn: sqlite3.Connection, *, chunk: list[tuple[StoredEvent, list[CounterDelta]]]
    ) -> list[bool]:
        """One write transaction: we hold the lock, so "which ids are new" and the log
        sequence numbers can be decided up front and every table written with executemany."""
        now = now_ms()
        seen = self._seen_ids(conn, [ev.event_id for ev, _ in chunk])
        fresh: list[bool] = []
        new: list[tuple[StoredEvent, list[CounterDelta]]] = []
        for ev, ev_deltas in chunk:
            is_new = ev.event_id not in seen
            fresh.append(is_new)
            if is_new:
                seen.add(ev.event_id)  # a repeat later in this batch is a duplicate too
                new.append((ev, ev_deltas))
        if not new:
            return fresh
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'event_log'").fetchone()
        first = (row[0] if row else 0) + 1
        log_rows = [
            (
                first + n,
                ev.event_id,
                ev.user_id,
                ev.item_id,
                ev.type,
                int(ev.timestamp_ms),
                ev.request_id,
                ev.variant_id,
            )
            for n, (ev, _) in enumerate(new)
        ]
        conn.executemany(
            "INSERT INTO seen_events (event_id, seen_ms) VALUES (?, ?)",
            [(ev.event_id, now) for ev, _ in new],
        )
        conn.executemany(
            "INSERT INTO event_log (seq, event_id, user_id, item_id, type, timestamp_ms,"
            " request_id, variant_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            log_rows,
        )
        conn.executemany(
            "INSERT INTO recent_events (seq, event_id, user_id, item_id, type, timestamp_ms,"
            " request_id, variant_id, recorded_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*r, now) for r in log_rows],
        )
        conn.executemany(SQL_COUNTER_UPSERT, merged_rows([d for _, ds in new for d in ds], now))
        cap = self.settings.recent_events_cap
        conn.executemany(SQL_TRIM_RECENT, [(u, u, cap) for u in {ev.user_id for ev, _ in new}])
        self._trim_log(conn, "event_log")
        return fresh

    @staticmethod
    def _seen_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        seen: set[str] = set()
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_IN_PARAMS):
            sql = f"SELECT event_id FROM seen_events WHERE event_id IN ({marks(len(chunk))})"
            seen.update(r[0] for r in conn.execute(sql, chunk))
        return seen

    def _trim_log(self, conn: sqlite3.Connection, table: str) -> None:
        conn.execute(
            f"DELETE FROM {table} WHERE seq <= (SELECT MAX(seq) FROM {table}) - ?",
            (self.settings.log_max_len,),
        )

    # -- counters -------------------------------------------------------------------------------
    def incr_counters(self, deltas: Sequence[CounterDelta]) -> None:
        if not deltas:
            return
        rows = delta_rows(deltas, now_ms())
        self._write_run(lambda conn: conn.executemany(SQL_COUNTER_UPSERT, rows))

    def get_counters(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        return self._run(lambda conn: self._read_counters(conn, keys))

    # -- logs -----------------------------------------------------------------------------------
    def log_exposures(self, records: Sequence[ExposureRecord]) -> None:
        if not records:
            return
        bodies = [exposure_json(r) for r in records]
        rows = [(int(r.timestamp_ms), body) for r, body in zip(records, bodies, strict=True)]
        served = served_rows(records, bodies, now_ms())

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO exposure_log (timestamp_ms, body) VALUES (?, ?)", rows)
            self._trim_log(conn, "exposure_log")
            conn.executemany(SQL_SERVED_UPSERT, served)

        self._write_run(write)

    def read_log(
        self, kind: LogKind, since_ms: int | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        check_kind(kind)
        remaining = limit if limit is not None else -1
        last_seq = 0
        while remaining != 0:
            page = 1000 if remaining < 0 else min(1000, remaining)
            read = functools.partial(
                self._log_page, kind=kind, after=last_seq, page=page, since_ms=since_ms
            )
            rows = self._run(read)
            if not rows:
                return
            for seq, row in rows:
                last_seq = seq
                yield row
            remaining = remaining - len(rows) if remaining > 0 else remaining
            if len(rows) < page:
                return

    @staticmethod
    def _log_page(
        conn: sqlite3.Connection, *, kind: LogKind, after: int, page: int, since_ms: int | None
    ) -> list[tuple[int, dict[str, Any]]]:
        since = -(2**62) if since_ms is None else int(since_ms)
        if kind == "exposure":
            cur = conn.execute(
                "SELECT seq, body FROM exposure_log WHERE seq > ? AND timestamp_ms >= ?"
                " ORDER BY seq LIMIT ?",
                (after, since, page),
            )
            return [(seq, json.loads(body)) for seq, body in cur]
        cur = conn.execute(
            "SELECT seq, event_id, user_id, item_id, type, timestamp_ms, request_id, variant_id"
            " FROM event_log WHERE seq > ? AND timestamp_ms >= ? ORDER BY seq LIMIT ?",
            (after, since, page),
        )
        return [
            (seq, event_row(StoredEvent(e, u, i, t, ts, r, v))) for seq, e, u, i, t, ts, r, v in cur
        ]

    def export_log(self, kind: LogKind, path: Path) -> int:
        return write_parquet(self.read_log(check_kind(kind)), kind, Path(path))

    # -- documents ------------------------------------------------------------------------------
    def put_document(self, namespace: str, name: str, doc: Mapping[str, Any]) -> None:
        check_doc_name(namespace, name)
        body = dumps(dict(doc))
        self._write_run(
            lambda conn: conn.execute(
                "INSERT INTO documents (namespace, name, body, updated_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, name) DO UPDATE SET body = excluded.body,"
                " updated_ms = excluded.updated_ms",
                (namespace, name, body, now_ms()),
            )
        )

    def get_document(self, namespace: str, name: str) -> dict[str, Any] | None:
        row = self._run(
            lambda conn: conn.execute(
                "SELECT body FROM documents WHERE namespace = ? AND name = ?", (namespace, name)
            ).fetchone()
        )
        return json.loads(row[0]) if row else None

    def list_documents(self, namespace: str) -> dict[str, dict[str, Any]]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT name, body FROM documents WHERE namespace = ? ORDER BY name", (namespace,)
            ).fetchall()
        )
        return {name: json.loads(body) for name, body in rows}

    def delete_document(self, namespace: str, name: str) -> bool:
        cur = self._write_run(
            lambda conn: conn.execute(
                "DELETE FROM documents WHERE namespace = ? AND name = ?", (namespace, name)
            )
        )
        return cur.rowcount > 0

    # -- lifecycle ------------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """Drop expired recent events and forgotten event ids (bounded disk, like Redis TTLs)."""
        self._last_housekeeping = time.monotonic()
        now = now_ms()
        recent_cutoff = now - self.settings.recent_events_ttl_s * 1000
        seen_cutoff = now - self.settings.event_id_ttl_s * 1000

        def purge(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                conn.execute("DELETE FROM recent_events WHERE recorded_ms < ?", (recent_cutoff,))
                conn.execute("DELETE FROM seen_events WHERE seen_ms < ?", (seen_cutoff,))
                conn.execute("DELETE FROM served_requests WHERE served_ms < ?", (seen_cutoff,))
                if self.settings.counters_ttl_s:
                    cutoff = now - self.settings.counters_ttl_s * 1000
                    conn.execute("DELETE FROM counters WHERE updated_ms < ?", (cutoff,))

        self._run(purge)

    def ping(self) -> float:
        start = time.perf_counter()
        self._run(lambda conn: conn.execute("SELECT 1").fetchone())
        return time.perf_counter() - start

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._connections = self._connections, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- what each request showed ---------------------------------------------------------------
    def served_variants(self, request_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        return self._served(request_ids, served_map)

    def served_exposures(self, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return self._served(request_ids, served_row)

    def _served(self, request_ids: Sequence[str], decode: Callable[[str], T]) -> dict[str, T]:
        """``decode(body)`` of each known request's stored exposure row (empty ones left out)."""
        ids = [str(r) for r in dict.fromkeys(request_ids) if r]
        cutoff = now_ms() - self.settings.event_id_ttl_s * 1000

        def read(conn: sqlite3.Connection) -> dict[str, T]:
            out: dict[str, T] = {}
            for chunk in chunks(ids, MAX_IN_PARAMS):
                sql = (
                    "SELECT request_id, body FROM served_requests"
                    f" WHERE request_id IN ({marks(len(chunk))}) AND served_ms >= ?"
                )
                for request_id, body in conn.execute(sql, (*chunk, cutoff)):
                    shown = decode(body)
                    if shown:
                        out[request_id] = shown
            return out

        return self._run(read) if ids else {}


SQL_SERVED_UPSERT = (
    "INSERT INTO served_requests (request_id, served_ms, body) VALUES (?, ?, ?)"
    " ON CONFLICT (request_id) DO UPDATE SET served_ms = excluded.served_ms,"
    " body = excluded.body"
)


def served_rows(
    records: Sequence[ExposureRecord], bodies: Sequence[str], now: int
) -> list[tuple[str, int, str]]:
    """One ``served_requests`` row per exposure record: one upsert per request, not one per
    item (a retried batch rewrites the same rows). The body is the exposure row's own JSON
    (already encoded for ``exposure_log``): a second encoding of the item -> variant map
    cost ~10 µs per request on the writer thread, a read of it is rare (RecordEvents)."""
    return [(r.request_id, now, body) for r, body in zip(records, bodies, strict=True)]


def chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(n: int) -> str:
    return ", ".join("?" * n)
