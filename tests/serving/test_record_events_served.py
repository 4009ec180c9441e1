"""RecordEvents checks impressions/clicks against what their request actually showed.

Real server, real gRPC channel, real store: SQLite and the real Redis (DB 13, own prefix).
The exposure flush period is one minute, so only RecordEvents' own flush can make a click
sent right after SelectArtwork known to the store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsvc.v1 import recommender_pb2 as pb


def _event(kind: pb.EventType, item: str, variant: str = "", request_id: str = "") -> pb.Event:
    return pb.Event(
        event_id=uuid.uuid4().hex, user_id="u003", item_id=item, type=kind, variant_id=variant,
        request_id=request_id, timestamp_ms=int(time.time() * 1000),
    )  # fmt: skip


def test_events_must_match_the_variant_their_request_showed(
    bundle_root: Path, start_server: Callable[..., Any], stub_for: Callable[..., Any],
    store_url: str,
) -> None:  # fmt: skip
    server = start_server(
        bundle_root, feature_store=store_url, bandit_policy="ts-item", exposure_flush_s=60.0
    )
    stub = stub_for(server)
    items = ["i001", "i002", "i004", "zzz"]
    served = stub.SelectArtwork(pb.SelectArtworkRequest(user_id="u003", item_ids=items), timeout=10)
    shown = {c.item_id: c.variant_id for c in served.choices}
    rid = served.request_id
    other = {"i001": ["i001-v0", "i001-v1"], "i002": ["i002-v0", "i002-v1", "i002-v2"]}
    wrong = {i: next(v for v in vs if v != shown[i]) for i, vs in other.items()}
    imp, click = pb.EVENT_TYPE_IMPRESSION, pb.EVENT_TYPE_CLICK

    good = [_event(imp, "i001", shown["i001"], rid), _event(click, "i001", shown["i001"], rid)]
    good.append(_event(imp, "i002", shown["i002"], rid))
    bad = {
        "unknown": _event(click, "i001", shown["i001"], "no-such-request"),
        "not shown": _event(imp, "i005", "i005-v0", rid),  # a real variant, other item
        "differs": _event(click, "i002", wrong["i002"], rid),
        "catalog": _event(click, "i001", "i002-v0", rid),
    }
    unattributed = _event(click, "i001", wrong["i001"])  # a variant but no request
    plain = _event(pb.EVENT_TYPE_PURCHASE, "i004", request_id=rid)  # no variant: history only
    resp = stub.RecordEvents(
        pb.RecordEventsRequest(events=[*good, *bad.values(), unattributed, plain]), timeout=10
    )
    reasons = {r.event_id: r.reason for r in resp.rejected}
    assert resp.accepted == len(good) + 2
    assert set(reasons) == {e.event_id for e in bad.values()}
    assert "request_id 'no-such-request' is unknown" in reasons[bad["unknown"].event_id]
    assert f"item 'i005' was not shown in request '{rid}'" in reasons[bad["not shown"].event_id]
    assert f"is not the variant request '{rid}' showed" in reasons[bad["differs"].event_id]
    assert "not a variant of item 'i001'" in reasons[bad["catalog"].event_id]

    # Bandit statistics moved for the three matching events only.
    store = server.servicer.guard.store
    counters = store.get_counters(["bandit:ts:i001", "bandit:ts:i002"])
    assert counters["bandit:ts:i001"] == {f"{shown['i001']}:n": 1.0, f"{shown['i001']}:c": 1.0}
    assert counters["bandit:ts:i002"] == {f"{shown['i002']}:n": 1.0}
    metrics = server.servicer.metrics.registry
    assert metrics.get_sample_value("recsvc_events_total", {"outcome": "unattributed"}) == 1
    assert metrics.get_sample_value("recsvc_events_total", {"outcome": "rejected"}) == 4
    # The user's history has every accepted event (the unattributed click included).
    state, _ = store.read_user("u003")
    assert {e.event_id for e in state.recent_events} == {
        *(e.event_id for e in good),
        unattributed.event_id,
        plain.event_id,
    }


def test_a_request_from_recommend_is_checked_too(
    bundle_root: Path, start_server: Callable[..., Any], stub_for: Callable[..., Any]
) -> None:
    server = start_server(bundle_root, bandit_policy="ts-item", exposure_flush_s=60.0)
    stub = stub_for(server)
    rec = stub.Recommend(pb.RecommendRequest(user_id="u005", k=5), timeout=10)
    first = rec.items[0]
    ok = _event(pb.EVENT_TYPE_CLICK, first.item_id, first.artwork_variant_id, rec.request_id)
    late = _event(pb.EVENT_TYPE_CLICK, first.item_id, first.artwork_variant_id, "older-request")
    resp = stub.RecordEvents(pb.RecordEventsRequest(events=[ok, late]), timeout=10)
    assert resp.accepted == 1
    assert [r.event_id for r in resp.rejected] == [late.event_id]


def test_clicks_right_after_serving_are_accepted_while_the_log_flushes(
    bundle_root: Path, start_server: Callable[..., Any], stub_for: Callable[..., Any]
) -> None:
    """The periodic exposure flush runs all the time here: a RecordEvents may find the
    queue empty while that flush is still writing its request; it must wait for it."""
    server = start_server(bundle_root, bandit_policy="ts-item", exposure_flush_s=0.001)
    stub = stub_for(server)
    for n in range(60):
        items = [f"i{(n + j) % 40:03d}" for j in range(5)]
        served = stub.SelectArtwork(
            pb.SelectArtworkRequest(user_id="u003", item_ids=items), timeout=10
        )
        events = [
            _event(pb.EVENT_TYPE_IMPRESSION, c.item_id, c.variant_id, served.request_id)
            for c in served.choices
        ]
        resp = stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)
        assert resp.accepted == len(events), [r.reason for r in resp.rejected]
