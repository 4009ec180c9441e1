"""The five RPCs against a real server and a real SQLite store (hand-made bundle)."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from recsvc.v1 import recommender_pb2 as pb
from tests.serving.bundle_factory import (
    NORTH_ONLY,
    SOUTH_ONLY,
    item_category,
    item_id,
    make_bundle,
    user_category,
    user_id,
)

NORTH_IDS = {item_id(j) for j in NORTH_ONLY}
SOUTH_IDS = {item_id(j) for j in SOUTH_ONLY}
BUNDLE = make_bundle()


def recommend(stub, user: str, k: int = 10, region: str = "", **kw) -> pb.RecommendResponse:
    return stub.Recommend(
        pb.RecommendRequest(user_id=user, k=k, context=pb.Context(region=region), **kw),
        timeout=10,
    )


def seen_items(u: int) -> set[str]:
    row = BUNDLE.user_items[u]
    return {item_id(j) for j in row.indices}


def test_known_user_gets_personal_items_of_their_taste(stub) -> None:
    resp = recommend(stub, user_id(4), k=10)
    ids = [i.item_id for i in resp.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert resp.model_version and resp.request_id and not resp.degraded
    assert not set(ids) & seen_items(4)
    # u004 leans to category 0 and lives in the north: no south-only items.
    assert sum(item_category(int(i[1:])) == user_category(4) for i in ids) >= 8
    assert not set(ids) & SOUTH_IDS
    scores = [i.score for i in resp.items]
    assert scores == sorted(scores, reverse=True)
    assert all(i.reason for i in resp.items)
    assert any(i.reason.startswith("similar to ") for i in resp.items)
    # default policy: the item's first variant, declared deterministic.
    assert all(i.artwork_variant_id == f"{i.item_id}-v0" for i in resp.items)
    assert all(i.artwork_propensity == 1.0 for i in resp.items)


def test_unknown_user_cold_start_depends_on_region_and_availability(stub) -> None:
    north = recommend(stub, "stranger-1", k=20, region="north")
    south = recommend(stub, "stranger-1", k=20, region="south")
    north_ids = [i.item_id for i in north.items]
    south_ids = [i.item_id for i in south.items]
    assert len(north_ids) == len(south_ids) == 20
    assert north_ids != south_ids
    assert not set(north_ids) & SOUTH_IDS and set(north_ids) & NORTH_IDS
    assert not set(south_ids) & NORTH_IDS and set(south_ids) & SOUTH_IDS
    assert all(i.reason == "popular in your region" for i in north.items)
    # A region the model does not know: only items sold everywhere.
    elsewhere = recommend(stub, "stranger-1", k=20, region="atlantis")
    assert not {i.item_id for i in elsewhere.items} & (NORTH_IDS | SOUTH_IDS)
    # No region at all: global popularity, still an answer (an anonymous visitor comes
    # with a session id; an empty user_id is refused: tests/edges).
    anywhere = recommend(stub, "session-42", k=5)
    assert len(anywhere.items) == 5 and anywhere.items[0].reason == "popular right now"


def test_exclusions_and_categories(stub) -> None:
    first = [i.item_id for i in recommend(stub, user_id(8), k=5).items]
    again = recommend(stub, user_id(8), k=5, exclude_item_ids=first[:3])
    ids = [i.item_id for i in again.items]
    assert len(ids) == 5 and not set(ids) & set(first[:3])
    music = recommend(stub, user_id(8), k=12, categories=["music"])
    assert len(music.items) == 12
    assert {item_category(int(i.item_id[1:])) for i in music.items} == {"music"}


def test_k_larger_than_candidates_falls_back_without_duplicates(stub) -> None:
    # u002 (north) has 40 precomputed candidates and over 120 allowed items.
    resp = recommend(stub, user_id(2), k=120)
    ids = [i.item_id for i in resp.items]
    assert len(ids) == len(set(ids)) == 120
    assert not set(ids) & seen_items(2) and not set(ids) & SOUTH_IDS
    too_many = recommend(stub, user_id(2), k=500)
    allowed = {item_id(j) for j in range(160)} - SOUTH_IDS - seen_items(2)
    assert {i.item_id for i in too_many.items} == allowed


def test_similar_items(stub) -> None:
    resp = stub.SimilarItems(pb.SimilarItemsRequest(item_id="i005", k=6), timeout=10)
    ids = [i.item_id for i in resp.items]
    assert len(ids) == 6 and "i005" not in ids
    assert {item_category(int(i[1:])) for i in ids} == {item_category(5)}
    assert [i.score for i in resp.items] == sorted((i.score for i in resp.items), reverse=True)
    with pytest.raises(grpc.RpcError) as err:
        stub.SimilarItems(pb.SimilarItemsRequest(item_id="nope", k=3), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_rank_items_orders_by_the_users_taste(stub) -> None:
    # u001 leans to category 1 (games): games items first, unknown item last.
    given = ["i000", "i001", "i002", "unknown-item", "i005", "i003"]
    resp = stub.RankItems(pb.RankItemsRequest(user_id=user_id(1), item_ids=given), timeout=10)
    ids = [i.item_id for i in resp.items]
    assert sorted(ids) == sorted(given)
    assert {ids[0], ids[1]} == {"i001", "i005"}
    assert ids[-1] == "unknown-item"
    cold = stub.RankItems(
        pb.RankItemsRequest(user_id="stranger", item_ids=given, context=pb.Context(region="south")),
        timeout=10,
    )
    assert len(cold.items) == len(given)


def test_select_artwork_and_exposure_log(stub, shared_server) -> None:
    items = ["i000", "i001", "i002", "zzz"]
    resp = stub.SelectArtwork(pb.SelectArtworkRequest(user_id="u003", item_ids=items), timeout=10)
    assert resp.request_id
    assert [c.item_id for c in resp.choices] == items
    assert [c.variant_id for c in resp.choices] == ["i000-v0", "i001-v0", "i002-v0", ""]
    rec = recommend(stub, user_id(3), k=4)
    store = shared_server.servicer.guard.store
    deadline = time.time() + 5
    logged: dict = {}
    while time.time() < deadline and len(logged) < 2:
        logged = {r["request_id"]: r for r in store.read_log("exposure")}
        logged = {k: v for k, v in logged.items() if k in (resp.request_id, rec.request_id)}
        time.sleep(0.05)
    assert set(logged) == {resp.request_id, rec.request_id}
    row = logged[rec.request_id]
    assert list(row["item_ids"]) == [i.item_id for i in rec.items]
    assert row["model_version"] == rec.model_version and row["policy"] == "default"
    assert list(row["propensities"]) == [1.0] * 4


def _event(
    user: str, item: str, kind: pb.EventType, variant: str = "", event_id: str = ""
) -> pb.Event:
    return pb.Event(
        event_id=event_id or uuid.uuid4().hex, user_id=user, item_id=item, type=kind,
        variant_id=variant, timestamp_ms=int(time.time() * 1000),
    )  # fmt: skip


def test_record_events_then_recommend_reflects_them(stub) -> None:
    user = user_id(12)  # leans to category 0 (books), lives in the north
    before = [i.item_id for i in recommend(stub, user, k=10).items]
    bought = before[0]
    music = [item_id(j) for j in range(60, 160) if item_category(j) == "music"][:4]
    events = [_event(user, bought, pb.EVENT_TYPE_PURCHASE, event_id=f"buy-{user}")]
    events += [_event(user, j, pb.EVENT_TYPE_CLICK) for j in music]
    resp = stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)
    assert resp.accepted == len(events) and not resp.rejected
    after = [i.item_id for i in recommend(stub, user, k=10).items]
    assert bought not in after
    assert not set(after) & set(music)  # clicked items count as interacted
    n_music = [sum(item_category(int(i[1:])) == "music" for i in ids) for ids in (before, after)]
    assert n_music[1] > n_music[0]
    # Idempotent: the same event_id again is not counted.
    again = stub.RecordEvents(pb.RecordEventsRequest(events=events[:1]), timeout=10)
    assert again.accepted == 0 and again.rejected[0].event_id == f"buy-{user}"
    assert "duplicate" in again.rejected[0].reason


def test_record_events_checks_the_variant_shown(stub) -> None:
    good = _event("u020", "i002", pb.EVENT_TYPE_CLICK, variant="i002-v2")
    bad = _event("u020", "i002", pb.EVENT_TYPE_CLICK, variant="i009-v1")
    unknown = _event("u020", "no-such-item", pb.EVENT_TYPE_IMPRESSION, variant="x")
    outside = _event("u020", "i007", pb.EVENT_TYPE_PURCHASE)  # no request, no variant: fine
    resp = stub.RecordEvents(
        pb.RecordEventsRequest(events=[good, bad, unknown, outside]), timeout=10
    )
    assert resp.accepted == 2
    reasons = {r.event_id: r.reason for r in resp.rejected}
    assert set(reasons) == {bad.event_id, unknown.event_id}
    assert "not a variant of item 'i002'" in reasons[bad.event_id]
