"""Nothing dubious answered silently: an empty user_id is refused (and logged at DEBUG with
the field, and counted), RankItems flags the items the model does not know, SimilarItems
of an item nobody interacted with compares its features; the metrics an operator needs
are exported."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest
from prometheus_client import generate_latest

from recsvc.v1 import recommender_pb2 as pb
from tests.serving.bundle_factory import item_category, item_id, make_bundle

REFUSED = [
    ("Recommend", pb.RecommendRequest(user_id="", k=3)),
    ("RankItems", pb.RankItemsRequest(user_id="", item_ids=["i001"])),
    ("SelectArtwork", pb.SelectArtworkRequest(user_id="", item_ids=["i001"])),
]


@pytest.mark.parametrize(("rpc", "request_"), REFUSED, ids=[r for r, _ in REFUSED])
def test_empty_user_id_is_refused_logged_and_counted(
    edge_stub, edge_server, caplog, rpc, request_
) -> None:  # type: ignore[no-untyped-def]
    with (
        caplog.at_level(logging.DEBUG, logger="recsvc.serving"),
        pytest.raises(grpc.RpcError) as err,
    ):
        getattr(edge_stub, rpc)(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "user_id: is required"
    refused = [r for r in caplog.records if r.getMessage() == "refused"]
    assert [(r.rpc, r.field) for r in refused] == [(rpc, "user_id")]  # type: ignore[attr-defined]
    metrics = edge_server.servicer.metrics
    assert metrics.refused.labels(rpc, "user_id")._value.get() >= 1


def test_rank_items_flags_unknown_items(edge_stub) -> None:  # type: ignore[no-untyped-def]
    given = ["i001", "new-item", "i002", "also-new"]
    reply = edge_stub.RankItems(pb.RankItemsRequest(user_id="u001", item_ids=given), timeout=10)
    flags = {i.item_id: i.unknown_item for i in reply.items}
    assert flags == {"i001": False, "i002": False, "new-item": True, "also-new": True}
    assert [i.item_id for i in reply.items][2:] == ["new-item", "also-new"]  # last, as given


def test_similar_items_of_an_item_without_interactions_uses_its_features(edge_stub) -> None:  # type: ignore[no-untyped-def]
    bundle = make_bundle()
    counts = np.bincount(bundle.user_items.indices, minlength=len(bundle.item_ids))
    lonely = int(np.flatnonzero(counts == 0)[0])
    reply = edge_stub.SimilarItems(pb.SimilarItemsRequest(item_id=item_id(lonely), k=5), timeout=10)
    got = [i.item_id for i in reply.items]
    assert len(got) == 5 and item_id(lonely) not in got
    assert {item_category(int(i[1:])) for i in got} == {item_category(lonely)}
    assert all(i.score == pytest.approx(1.0) for i in reply.items)  # its one feature matches
    # The most popular of its category first.
    same = [j for j in range(len(bundle.item_ids)) if item_category(j) == item_category(lonely)]
    same = [j for j in same if j != lonely]
    best = sorted(same, key=lambda j: (-bundle.popularity[j], j))[:5]
    assert got == [item_id(j) for j in best]
    # An item with interactions still gets its vector neighbours.
    busy = int(np.flatnonzero(counts > 0)[0])
    near = edge_stub.SimilarItems(pb.SimilarItemsRequest(item_id=item_id(busy), k=5), timeout=10)
    assert [i.score for i in near.items] != [1.0] * 5


def test_operator_metrics_are_exported(edge_stub, edge_server) -> None:  # type: ignore[no-untyped-def]
    edge_stub.Recommend(pb.RecommendRequest(user_id="u003", k=4), timeout=10)
    text = generate_latest(edge_server.servicer.metrics.registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "recsvc_bundle_age_seconds",
                 "recsvc_artwork_choices_total", "recsvc_experiment_assignments_total",
                 "recsvc_refused_total"):  # fmt: skip
        assert name in text, name
    chosen = [ln for ln in text.splitlines() if ln.startswith("recsvc_artwork_choices_total{")]
    assert chosen and float(chosen[0].split()[-1]) >= 4
