"""Every request limit answers INVALID_ARGUMENT naming the field; deadlines are honoured."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from recsvc.serving.limits import MAX_EVENTS, MAX_ID_BYTES, MAX_ITEMS, MAX_K
from recsvc.v1 import recommender_pb2 as pb

LONG_ID = "é" * (MAX_ID_BYTES // 2 + 1)  # 129 chars, 258 UTF-8 bytes
OK_ID = "x" * MAX_ID_BYTES


def _event(i: int, **kw: Any) -> pb.Event:
    fields: dict[str, Any] = {"event_id": f"e{i}", "user_id": "u000", "item_id": "i000",
              "type": pb.EVENT_TYPE_CLICK}  # fmt: skip
    fields.update(kw)
    return pb.Event(**fields)


CASES = [
    ("Recommend", pb.RecommendRequest(user_id="u000", k=0), "k"),
    ("Recommend", pb.RecommendRequest(user_id="u000", k=MAX_K + 1), "k"),
    ("Recommend", pb.RecommendRequest(user_id="u000", k=-3), "k"),
    ("Recommend", pb.RecommendRequest(user_id=LONG_ID, k=5), "user_id"),
    (
        "Recommend",
        pb.RecommendRequest(user_id="u000", k=5, exclude_item_ids=["i1"] * (MAX_ITEMS + 1)),
        "exclude_item_ids",
    ),
    (
        "Recommend",
        pb.RecommendRequest(user_id="u000", k=5, exclude_item_ids=["i1", LONG_ID]),
        "exclude_item_ids[1]",
    ),
    (
        "Recommend",
        pb.RecommendRequest(user_id="u000", k=5, context=pb.Context(region=LONG_ID)),
        "context.region",
    ),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="i000", k=MAX_K + 1), "k"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="", k=5), "item_id"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id=LONG_ID, k=5), "item_id"),
    (
        "RankItems",
        pb.RankItemsRequest(user_id="u000", item_ids=["i000"] * (MAX_ITEMS + 1)),
        "item_ids",
    ),
    ("RankItems", pb.RankItemsRequest(user_id="u000", item_ids=["i000", LONG_ID]), "item_ids[1]"),
    ("RankItems", pb.RankItemsRequest(user_id=LONG_ID, item_ids=["i000"]), "user_id"),
    (
        "SelectArtwork",
        pb.SelectArtworkRequest(user_id="u000", item_ids=["i0"] * (MAX_ITEMS + 1)),
        "item_ids",
    ),
    ("SelectArtwork", pb.SelectArtworkRequest(user_id="u0", item_ids=[""]), "item_ids[0]"),
    (
        "RecordEvents",
        pb.RecordEventsRequest(events=[_event(i) for i in range(MAX_EVENTS + 1)]),
        "events",
    ),
    (
        "RecordEvents",
        pb.RecordEventsRequest(events=[_event(0), _event(1, event_id="")]),
        "events[1].event_id",
    ),
    (
        "RecordEvents",
        pb.RecordEventsRequest(events=[_event(0, item_id=LONG_ID)]),
        "events[0].item_id",
    ),
    ("RecordEvents", pb.RecordEventsRequest(events=[_event(0, user_id="")]), "events[0].user_id"),
    (
        "RecordEvents",
        pb.RecordEventsRequest(events=[_event(0, type=pb.EVENT_TYPE_UNSPECIFIED)]),
        "events[0].type",
    ),
]


@pytest.mark.parametrize(("rpc", "request_", "field"), CASES)
def test_limit_violations_name_the_field(stub, rpc: str, request_, field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, rpc)(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:"), err.value.details()


def test_limits_themselves_are_allowed(stub) -> None:
    assert stub.Recommend(pb.RecommendRequest(user_id=OK_ID, k=MAX_K), timeout=10).items
    ranked = stub.RankItems(
        pb.RankItemsRequest(user_id="u000", item_ids=[f"i{j % 160:03d}" for j in range(MAX_ITEMS)]),
        timeout=10,
    )
    assert len(ranked.items) == MAX_ITEMS
    events = [_event(i, event_id=f"limit-{i}", type=pb.EVENT_TYPE_IMPRESSION)
              for i in range(MAX_EVENTS)]  # fmt: skip
    assert (
        stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=30).accepted == MAX_EVENTS
    )


def test_expired_deadline_is_not_served(stub) -> None:
    # A 1 µs deadline expires in flight: the answer is DEADLINE_EXCEEDED (from the client or
    # from the server's check before any work), never another error.
    # A fast server can still answer a few in time on loopback, so try until one expires.
    codes = []
    for _ in range(50):
        try:
            stub.Recommend(pb.RecommendRequest(user_id="u000", k=5), timeout=0.000001)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                break
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK}
