"""Row <-> record conversions shared by the backends (JSON bodies, log rows, Parquet)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

from feature_store.base import EVENT_TYPES, CounterDelta, ExposureRecord, LogKind, StoredEvent

LOG_KINDS: tuple[LogKind, ...] = ("exposure", "event")


def log_schema(kind: LogKind) -> Any:
    """Parquet schema of a log (pyarrow imported here: the serving path never needs it)."""
    import pyarrow as pa

    if kind == "event":
        return pa.schema(
            [
                ("event_id", pa.string()),
                ("user_id", pa.string()),
                ("item_id", pa.string()),
                ("type", pa.string()),
                ("timestamp_ms", pa.int64()),
                ("request_id", pa.string()),
                ("variant_id", pa.string()),
            ]
        )
    return pa.schema(
        [
            ("request_id", pa.string()),
            ("user_id", pa.string()),
            ("timestamp_ms", pa.int64()),
            ("item_ids", pa.list_(pa.string())),
            ("variant_ids", pa.list_(pa.string())),
            ("propensities", pa.list_(pa.float64())),
            ("model_version", pa.string()),
            ("experiment", pa.string()),
            ("variant", pa.string()),
            ("policy", pa.string()),
            ("context", pa.map_(pa.string(), pa.string())),  # read back as (key, value) pairs
            ("policy_key", pa.string()),
        ]
    )


EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StoredEvent))

_new = object.__new__
(_set_eid, _set_uid, _set_iid, _set_type, _set_ts, _set_rid, _set_vid) = (
    StoredEvent.__dict__[name].__set__  # slot descriptors: skip the frozen __setattr__ path
    for name in EVENT_FIELDS
)


def make_event(
    event_id: str,
    user_id: str,
    item_id: str,
    type: str,
    timestamp_ms: int,
    request_id: str,
    variant_id: str,
) -> StoredEvent:
    """``StoredEvent(...)`` at ~60% of the cost: the read path builds up to 100 per request."""
    event: StoredEvent = _new(StoredEvent)
    _set_eid(event, event_id)
    _set_uid(event, user_id)
    _set_iid(event, item_id)
    _set_type(event, type)
    _set_ts(event, timestamp_ms)
    _set_rid(event, request_id)
    _set_vid(event, variant_id)
    return event


EXPOSURE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ExposureRecord))
_exposure_setters = tuple(ExposureRecord.__dict__[name].__set__ for name in EXPOSURE_FIELDS)


def make_exposure(
    request_id: str,
    user_id: str,
    timestamp_ms: int,
    item_ids: Sequence[str],
    variant_ids: Sequence[str],
    propensities: Sequence[float],
    model_version: str,
    experiment: str,
    variant: str,
    policy: str,
    context: Mapping[str, str],
    policy_key: str = "",
) -> ExposureRecord:
    """``ExposureRecord(...)`` with every field given, without the frozen dataclass's
    per-field ``object.__setattr__`` (the server builds one per request)."""
    record: ExposureRecord = _new(ExposureRecord)
    values = (request_id, user_id, timestamp_ms, item_ids, variant_ids, propensities,
              model_version, experiment, variant, policy, context, policy_key)  # fmt: skip
    for setter, value in zip(_exposure_setters, values, strict=True):
        setter(record, value)
    return record


EventRow = Sequence[Any]  # (event_id, item_id, type, timestamp_ms, request_id, variant_id)


class RecentEvents(Sequence[StoredEvent]):
    """A user's recent events (newest first), decoded on first use.

    The read path hands these over undecoded (Redis: the stored JSON entries; SQLite: the
    fetched rows): building ~100 ``StoredEvent`` objects costs more than the round trip
    itself (docs/benchmarks/feature_store.md), and many requests never look at them.
    ``item_ids()``/``types()`` skip the objects for callers that need only those columns.
    Behaves as an immutable list: equal to a list holding the same events.
    """

    __slots__ = ("_events", "_raw", "_rows", "_user_id")

    def __init__(
        self, user_id: str, rows: list[EventRow] | None = None, raw: list[str] | None = None
    ) -> None:
        self._user_id = user_id
        self._rows = rows
        self._raw = raw  # JSON arrays, one per event, parsed together on first use
        self._events: list[StoredEvent] | None = None

    def _parsed(self) -> list[EventRow]:
        if self._rows is None:
            raw = self._raw or []
            # _raw stays: a concurrent __len__ may still be reading it
            self._rows = json.loads("[" + ",".join(raw) + "]") if raw else []
        return self._rows

    def _decoded(self) -> list[StoredEvent]:
        events = self._events
        if events is None:
            u = self._user_id
            events = [make_event(e, u, i, t, ts, r, v) for e, i, t, ts, r, v in self._parsed()]
            self._events = events  # a racing thread decodes the same list: harmless
        return events

    def item_ids(self) -> list[str]:
        return [row[1] for row in self._parsed()]

    def types(self) -> list[str]:
        return [row[2] for row in self._parsed()]

    def __len__(self) -> int:
        rows = self._rows
        return len(self._raw or ()) if rows is None else len(rows)  # counting needs no parse

    @overload
    def __getitem__(self, index: int) -> StoredEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[StoredEvent]: ...

    def __getitem__(self, index: int | slice) -> StoredEvent | list[StoredEvent]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[StoredEvent]:
        return iter(self._decoded())

    def __reversed__(self) -> Iterator[StoredEvent]:
        return reversed(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecentEvents | list | tuple):
            return self._decoded() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them

    def __repr__(self) -> str:
        return f"RecentEvents({self._decoded()!r})"


def check_kind(kind: str) -> LogKind:
    if kind not in LOG_KINDS:
        raise ValueError(f"log kind {kind!r}: expected one of {', '.join(LOG_KINDS)}")
    return kind  # type: ignore[return-value]


def _check_event(event: StoredEvent) -> None:
    """Refuse events the log could not hold or that would collide in key space."""
    if not event.event_id:
        raise ValueError("event_id: must not be empty (it makes events idempotent)")
    if not event.user_id:
        raise ValueError(f"user_id: must not be empty (event_id {event.event_id!r})")
    if not event.item_id:
        raise ValueError(f"item_id: must not be empty (event_id {event.event_id!r})")
    if event.type not in EVENT_TYPES:
        raise ValueError(
            f"type: {event.type!r} (event_id {event.event_id!r}) is not one of "
            f"{', '.join(EVENT_TYPES)}"
        )


def check_batch(
    events: Sequence[StoredEvent], deltas: Iterable[Iterable[CounterDelta]] | None
) -> list[list[CounterDelta]]:
    """A ``record_events`` batch checked as every store checks it: one delta list per
    event (none given = no deltas), then each event; returns the delta lists."""
    n = len(events)
    if deltas is None:
        out: list[list[CounterDelta]] = [[] for _ in range(n)]
    else:
        out = [list(d) for d in deltas]
        if len(out) != n:
            raise ValueError(f"deltas: {len(out)} lists for {n} events (need one per event)")
    for event in events:
        _check_event(event)
    return out


def delta_rows(deltas: Iterable[CounterDelta], now: int) -> list[tuple[str, str, float, int]]:
    rows = []
    for d in deltas:
        if not d.key or not d.field:
            raise ValueError(f"counter delta {d!r}: key and field must not be empty")
        amount = float(d.amount)
        if not math.isfinite(amount):
            raise ValueError(f"counter delta {d!r}: amount must be finite")
        rows.append((d.key, d.field, amount, now))
    return rows


def merged_rows(deltas: Iterable[CounterDelta], now: int) -> list[tuple[str, str, float, int]]:
    """:func:`delta_rows` with the amounts of one (key, field) summed, in order: one upsert
    per counter field instead of one per delta (the 20 impressions of a request moved by the
    linear bandit share their theme sums)."""
    merged: dict[tuple[str, str], float] = {}
    for key, field, amount, _ in delta_rows(deltas, now):
        k = (key, field)
        merged[k] = merged[k] + amount if k in merged else amount
    return [(key, field, amount, now) for (key, field), amount in merged.items()]


def check_doc_name(namespace: str, name: str) -> None:
    if not namespace or not name:
        raise ValueError(f"document namespace/name must not be empty ({namespace!r}, {name!r})")


def event_row(event: StoredEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.type,
        "timestamp_ms": int(event.timestamp_ms),
        "request_id": event.request_id,
        "variant_id": event.variant_id,
    }


def served_items(record: ExposureRecord) -> dict[str, str]:
    """``{item_id: variant_id}`` the request showed: what ``served_variants`` answers."""
    return dict(zip(map(str, record.item_ids), map(str, record.variant_ids), strict=True))


def served_row(body: str | bytes) -> dict[str, Any]:
    """A stored exposure row (JSON) as :func:`exposure_row` wrote it (rows written before
    ``policy_key`` existed lack it)."""
    row: dict[str, Any] = json.loads(body)
    return row


def served_map(body: str | bytes) -> dict[str, str]:
    """``{item_id: variant_id}`` from a stored exposure row (JSON): what ``served_variants``
    answers for the request it records."""
    row = json.loads(body)
    return dict(zip(row["item_ids"], row["variant_ids"], strict=True))


def exposure_row(record: ExposureRecord) -> dict[str, Any]:
    n = len(record.item_ids)
    if len(record.variant_ids) != n or len(record.propensities) != n:
        raise ValueError(
            f"exposure {record.request_id!r}: item_ids, variant_ids and propensities must have "
            f"the same length ({n}, {len(record.variant_ids)}, {len(record.propensities)})"
        )
    return {
        "request_id": record.request_id,
        "user_id": record.user_id,
        "timestamp_ms": int(record.timestamp_ms),
        "item_ids": [str(x) for x in record.item_ids],
        "variant_ids": [str(x) for x in record.variant_ids],
        "propensities": [float(x) for x in record.propensities],
        "model_version": record.model_version,
        "experiment": record.experiment,
        "variant": record.variant,
        "policy": record.policy,
        "context": {str(k): str(v) for k, v in record.context.items()},
        "policy_key": record.policy_key,
    }


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_quote = json.encoder.encode_basestring  # C: '"' + escaped + '"', non-ASCII kept as dumps does
_FLOAT_TEXT: dict[float, str] = {}
_MAX_FLOAT_TEXTS = 4096


def dumps(obj: Any) -> str:
    """Compact JSON, non-ASCII kept (one shared encoder: ``json.dumps`` builds one per call)."""
    return _ENCODER.encode(obj)


def _floats_json(values: Sequence[Any]) -> str | None:
    """``dumps`` of ``[float(v) for v in values]`` without its brackets, or None when a value
    is not finite (the caller then takes the generic path). Propensities repeat (1.0 for a
    default variant), and ``float.__repr__`` costs more than a dict lookup, so the texts are
    memoized (bounded)."""
    floats = list(map(float, values))
    if not math.isfinite(sum(floats)):  # NaN/inf anywhere (or an overflowing sum): generic
        return None
    texts = list(map(_FLOAT_TEXT.get, floats))
    if None in texts:
        if len(_FLOAT_TEXT) >= _MAX_FLOAT_TEXTS:
            _FLOAT_TEXT.clear()
        for i, text in enumerate(texts):
            if text is None:
                value = floats[i]
                texts[i] = text = repr(value)
                if value:  # never 0.0: -0.0 equals it as a key but prints differently
                    _FLOAT_TEXT[value] = text
    return ",".join(texts)  # type: ignore[arg-type]


def exposure_json(record: ExposureRecord) -> str:
    """``dumps(exposure_row(record))``, the same text, at about a third of the CPU: the
    lists are joined from C-quoted strings instead of walked by the encoder (the exposure
    writer does this per request, holding the GIL)."""
    scalars = (record.request_id, record.user_id, record.model_version, record.experiment,
               record.variant, record.policy, record.policy_key)  # fmt: skip
    n = len(record.item_ids)
    if (
        len(record.variant_ids) != n
        or len(record.propensities) != n
        or any(type(v) is not str for v in scalars)
    ):
        return dumps(exposure_row(record))  # errors and unusual types: the reference path
    floats = _floats_json(record.propensities)
    if floats is None:
        return dumps(exposure_row(record))
    context = record.context
    return "".join(
        (
            '{"request_id":', _quote(record.request_id),
            ',"user_id":', _quote(record.user_id),
            ',"timestamp_ms":', str(int(record.timestamp_ms)),
            ',"item_ids":[', ",".join(map(_quote, map(str, record.item_ids))),
            '],"variant_ids":[', ",".join(map(_quote, map(str, record.variant_ids))),
            '],"propensities":[', floats,
            '],"model_version":', _quote(record.model_version),
            ',"experiment":', _quote(record.experiment),
            ',"variant":', _quote(record.variant),
            ',"policy":', _quote(record.policy),
            ',"context":', _mapping_json(context) if context else "{}",
            ',"policy_key":', _quote(record.policy_key),
            "}",
        )
    )  # fmt: skip


def _mapping_json(mapping: Mapping[Any, Any]) -> str:
    """``dumps({str(k): str(v) for k, v in mapping.items()})``."""
    return _object_json({str(k): str(v) for k, v in mapping.items()})


def _object_json(shown: dict[str, str]) -> str:
    """``dumps(shown)`` of a str -> str dict: quoted in C, joined, no encoder walk."""
    pairs = zip(map(_quote, shown), map(_quote, shown.values()), strict=True)
    return "{" + ",".join(map(":".join, pairs)) + "}"


def str_mapping(values: Mapping[str, Any], what: str) -> dict[str, str]:
    """Profiles and item attributes are categorical: keys and values as str ('' for None)."""
    out: dict[str, str] = {}
    for k, v in values.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"{what}: feature names must be non-empty strings, got {k!r}")
        out[k] = "" if v is None else str(v)
    return out


def write_parquet(rows: Iterator[dict[str, Any]], kind: LogKind, path: Path) -> int:
    """Stream ``rows`` to ``path`` in row groups; the file appears only when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = log_schema(kind)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    total = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            if kind == "exposure":
                row = {**row, "context": list(row["context"].items())}
            batch.append(row)
            if len(batch) >= 10_000:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                total += len(batch)
                batch = []
        if batch or total == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            total += len(batch)
    tmp.replace(path)
    return total
