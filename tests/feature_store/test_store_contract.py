"""The OnlineStore contract, run unchanged against SQLite and a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feature_store import (
    CounterDelta,
    ExposureRecord,
    OnlineStore,
    StoredEvent,
    UserState,
)

MakeStore = Callable[..., OnlineStore]


def event(n: int, user: str = "u1", *, item: str | None = None, kind: str = "click") -> StoredEvent:
    return StoredEvent(
        event_id=f"ev-{user}-{n}",
        user_id=user,
        item_id=item or f"item-{n % 7}",
        type=kind,
        timestamp_ms=1_700_000_000_000 + n,
        request_id=f"req-{n // 3}",
        variant_id=f"v{n % 2}",
    )


def exposure(n: int, user: str = "u1") -> ExposureRecord:
    return ExposureRecord(
        request_id=f"req-{n}",
        user_id=user,
        timestamp_ms=1_700_000_000_000 + n * 10,
        item_ids=[f"item-{n}", f"item-{n + 1}"],
        variant_ids=["a", "b"],
        propensities=[0.25, 0.75],
        model_version="v7",
        experiment="artwork-policy",
        variant="control" if n % 2 else "contextual",
        policy="thompson",
        context={"region": "US-9", "device": "tv"},
    )


def test_unknown_user_is_an_empty_state_not_an_error(store: OnlineStore) -> None:
    state, counters = store.read_user("nobody", ["c:none"])
    assert isinstance(state, UserState)
    assert dict(state.profile) == {}
    assert list(state.recent_events) == []
    assert counters == {"c:none": {}}
    assert store.get_item_attributes(["no-such-item"]) == {}


def test_profiles_and_item_attributes_round_trip(store: OnlineStore) -> None:
    users = [(f"u{i}", {"region": f"R{i % 3}", "age": str(20 + i)}) for i in range(50)]
    assert store.write_user_profiles(users) == 50
    for user_id, features in users[::7]:
        state, _ = store.read_user(user_id)
        assert dict(state.profile) == features
    # a rewrite replaces the row: dropped features disappear
    assert store.write_user_profiles([("u3", {"region": "CA"})]) == 1
    assert dict(store.read_user("u3")[0].profile) == {"region": "CA"}

    items = [("i1", {"regions": "US|CA", "category": "shoes"}), ("i2", {"regions": ""})]
    assert store.write_item_attributes(items) == 2
    assert store.get_item_attributes(["i2", "missing", "i1"]) == {
        "i1": {"regions": "US|CA", "category": "shoes"},
        "i2": {"regions": ""},
    }


def test_recent_events_newest_first_and_capped(make_store: MakeStore) -> None:
    store = make_store(recent_events_cap=5)
    store.record_events([event(n) for n in range(8)])
    store.record_events([event(n, user="u2") for n in range(2)])
    state, _ = store.read_user("u1")
    assert [e.event_id for e in state.recent_events] == [f"ev-u1-{n}" for n in (7, 6, 5, 4, 3)]
    assert state.recent_events[0] == event(7)  # every field survives the round trip
    assert [e.event_id for e in store.read_user("u2")[0].recent_events] == ["ev-u2-1", "ev-u2-0"]


def test_read_user_returns_profile_events_and_counters_together(store: OnlineStore) -> None:
    store.write_user_profiles([("u1", {"region": "CA", "age": "25-34"}), ("u2", {"region": "CA"})])
    store.record_events([event(n) for n in range(3)])  # u1 only
    store.incr_counters([CounterDelta("c:1", "n", 2.0)])
    state, counters = store.read_user("u1", ["c:1", "c:none"])
    assert dict(state.profile) == {"region": "CA", "age": "25-34"}
    assert [e.event_id for e in state.recent_events] == ["ev-u1-2", "ev-u1-1", "ev-u1-0"]
    assert counters == {"c:1": {"n": 2.0}, "c:none": {}}
    state.profile["region"] = "edited by a caller"  # type: ignore[index]
    assert dict(store.read_user("u1")[0].profile)["region"] == "CA"
    u2, _ = store.read_user("u2")  # a profile without events, and events without a profile
    assert (dict(u2.profile), list(u2.recent_events)) == ({"region": "CA"}, [])
    store.record_events([event(1, user="u3")])
    u3, _ = store.read_user("u3")
    assert (dict(u3.profile), [e.event_id for e in u3.recent_events]) == ({}, ["ev-u3-1"])


def test_recent_events_behave_as_an_immutable_list(store: OnlineStore) -> None:
    events = [event(n, kind=("click", "purchase", "impression")[n % 3]) for n in range(6)]
    store.record_events(events)
    newest_first = events[::-1]
    state, _ = store.read_user("u1")
    assert len(state.recent_events) == 6 and state.recent_events  # counted before decoding
    assert state.recent_item_ids() == [e.item_id for e in newest_first]
    assert state.recent_types() == [e.type for e in newest_first]
    assert state.recent_events == newest_first and newest_first == state.recent_events
    assert state == UserState(profile=state.profile, recent_events=newest_first)
    assert state.recent_events[1:3] == newest_first[1:3]
    assert state.recent_events[-1] == events[0] and events[2] in state.recent_events
    assert list(reversed(state.recent_events)) == events
    assert state.recent_events != newest_first[1:]
    plain = UserState(profile={}, recent_events=newest_first)  # the accessors' default path
    assert plain.recent_item_ids() == state.recent_item_ids()


def test_counter_sums_are_doubles_on_both_backends(store: OnlineStore) -> None:
    for _ in range(3):
        store.incr_counters([CounterDelta("k", "x", 0.1)])
    store.record_events([event(1)], [[CounterDelta("k", "y", 2)]])
    _, counters = store.read_user("u1", ["k"])
    assert counters == {"k": {"x": 0.1 + 0.1 + 0.1, "y": 2.0}}  # IEEE sums, not decimal
    assert all(type(v) is float for v in counters["k"].values())
    assert store.get_counters(["k"]) == counters


def test_recent_events_expire_after_ttl(make_store: MakeStore) -> None:
    store = make_store(recent_events_ttl_s=1)
    store.record_events([event(1)])
    assert len(store.read_user("u1")[0].recent_events) == 1
    time.sleep(1.3)
    assert list(store.read_user("u1")[0].recent_events) == []


def test_same_event_id_counts_once(store: OnlineStore) -> None:
    deltas = [CounterDelta("ctr:item-1", "impressions", 1.0), CounterDelta("ctr:item-1", "c", 2)]
    first = store.record_events([event(1), event(2), event(1)], [deltas, deltas, deltas])
    assert first == [True, True, False]  # a duplicate inside one batch is caught too
    again = store.record_events([event(2), event(3)], [deltas, deltas])
    assert again == [False, True]
    counters = store.get_counters(["ctr:item-1"])
    assert counters == {"ctr:item-1": {"impressions": 3.0, "c": 6.0}}
    ids = [row["event_id"] for row in store.read_log("event")]
    assert ids == ["ev-u1-1", "ev-u1-2", "ev-u1-3"]
    recent = [e.event_id for e in store.read_user("u1")[0].recent_events]
    assert recent == ["ev-u1-3", "ev-u1-2", "ev-u1-1"]


def test_counters_exact_and_read_with_the_user(store: OnlineStore) -> None:
    keys = [f"bandit:item-{i}:ctx" for i in range(20)]
    for _ in range(10):
        store.incr_counters(
            [CounterDelta(k, "n", 1) for k in keys] + [CounterDelta(keys[0], "r", 0.5)]
        )
    store.incr_counters([CounterDelta(keys[1], "n", -3)])
    store.write_user_profiles([("u1", {"region": "US"})])
    state, counters = store.read_user("u1", [*keys, "bandit:never"])
    assert state.profile["region"] == "US"
    assert counters[keys[0]] == {"n": 10.0, "r": 5.0}
    assert counters[keys[1]] == {"n": 7.0}
    assert all(counters[k] == {"n": 10.0} for k in keys[2:])
    assert counters["bandit:never"] == {}
    assert store.get_counters(keys[:2]) == {k: counters[k] for k in keys[:2]}
    store.incr_counters([])  # nothing to do is not an error


def test_exposure_log_round_trip_oldest_first_and_parquet(
    store: OnlineStore, tmp_path: Path
) -> None:
    records = [exposure(n, user=f"u{n % 3}") for n in range(25)]
    store.log_exposures(records[:10])
    store.log_exposures(records[10:])
    rows = list(store.read_log("exposure"))
    assert [r["request_id"] for r in rows] == [f"req-{n}" for n in range(25)]
    assert rows[3]["item_ids"] == ["item-3", "item-4"]
    assert rows[3]["propensities"] == [0.25, 0.75]
    assert rows[3]["context"] == {"region": "US-9", "device": "tv"}
    assert rows[3]["variant"] == "control"
    assert [r["request_id"] for r in store.read_log("exposure", limit=4)] == [
        f"req-{n}" for n in range(4)
    ]
    since = records[20].timestamp_ms
    assert [r["request_id"] for r in store.read_log("exposure", since_ms=since)] == [
        f"req-{n}" for n in range(20, 25)
    ]

    path = tmp_path / "out" / "exposures.parquet"
    assert store.export_log("exposure", path) == 25
    table = pq.read_table(path)
    assert table.num_rows == 25
    assert table.column("request_id").to_pylist() == [r["request_id"] for r in rows]
    assert table.column("propensities").to_pylist()[0] == [0.25, 0.75]
    assert dict(table.column("context").to_pylist()[0]) == {"region": "US-9", "device": "tv"}


def test_event_log_export_and_empty_export(store: OnlineStore, tmp_path: Path) -> None:
    assert store.export_log("event", tmp_path / "empty.parquet") == 0
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    events = [event(n, user=f"u{n % 4}", kind="impression") for n in range(30)]
    store.record_events(events)
    assert store.export_log("event", tmp_path / "events.parquet") == 30
    table = pq.read_table(tmp_path / "events.parquet").to_pylist()
    assert [r["event_id"] for r in table] == [e.event_id for e in events]
    assert table[5] == {
        "event_id": events[5].event_id,
        "user_id": events[5].user_id,
        "item_id": events[5].item_id,
        "type": "impression",
        "timestamp_ms": events[5].timestamp_ms,
        "request_id": events[5].request_id,
        "variant_id": events[5].variant_id,
    }


def test_logs_are_bounded(make_store: MakeStore) -> None:
    store = make_store(log_max_len=100, write_batch=200)
    store.record_events([event(n, user=f"u{n % 10}") for n in range(1000)])
    store.log_exposures([exposure(n) for n in range(1000)])
    for kind in ("event", "exposure"):
        rows = list(store.read_log(kind))  # type: ignore[arg-type]
        # Redis trims whole stream nodes (MAXLEN ~), so allow one node of slack
        assert 100 <= len(rows) <= 100 + 100, kind
        assert rows[-1]["timestamp_ms"] == max(r["timestamp_ms"] for r in rows)


def test_documents_crud(store: OnlineStore) -> None:
    assert store.get_document("experiments", "a") is None
    assert store.list_documents("experiments") == {}
    doc = {"name": "a", "variants": [{"name": "control", "weight": 0.5}], "active": True}
    store.put_document("experiments", "a", doc)
    store.put_document("experiments", "b", {"name": "b"})
    store.put_document("other", "a", {"x": 1})
    assert store.get_document("experiments", "a") == doc
    store.put_document("experiments", "a", {**doc, "active": False})
    assert store.get_document("experiments", "a") == {**doc, "active": False}
    assert store.list_documents("experiments") == {
        "a": {**doc, "active": False},
        "b": {"name": "b"},
    }
    assert store.delete_document("experiments", "a") is True
    assert store.delete_document("experiments", "a") is False
    assert list(store.list_documents("experiments")) == ["b"]
    assert store.get_document("other", "a") == {"x": 1}


def test_bad_arguments_raise_value_error(store: OnlineStore) -> None:
    with pytest.raises(ValueError, match="event_id"):
        store.record_events([StoredEvent("", "u1", "i1", "click", 1)])
    with pytest.raises(ValueError, match="type"):
        store.record_events([StoredEvent("e1", "u1", "i1", "bogus", 1)])
    with pytest.raises(ValueError, match="deltas"):
        store.record_events([event(1)], [])
    with pytest.raises(ValueError, match="finite"):
        store.incr_counters([CounterDelta("k", "n", float("nan"))])
    with pytest.raises(ValueError, match="finite"):
        store.record_events([event(1)], [[CounterDelta("k", "n", float("inf"))]])
    with pytest.raises(ValueError, match="log kind"):
        list(store.read_log("bogus"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        store.log_exposures([ExposureRecord("r", "u", 1, ["a"], [], [])])
    # nothing was half-written by the refused calls
    assert list(store.read_log("event")) == []
    assert store.get_counters(["k"]) == {"k": {}}


def test_ping_and_threads_share_one_store(store: OnlineStore) -> None:
    assert 0 < store.ping() < 1.0
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for n in range(20):
                store.record_events([event(n, user=f"t{t}")], [[CounterDelta("shared", "n", 1)]])
                store.read_user(f"t{t}", ["shared"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors
    assert store.get_counters(["shared"]) == {"shared": {"n": 80.0}}
