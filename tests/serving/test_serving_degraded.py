"""Feature store killed mid-test: degraded answers, then recovery without a restart."""

from __future__ import annotations

import time

import grpc
import pytest

from recsvc.v1 import recommender_pb2 as pb
from tests.fixtures.redis_server import ThrowawayRedis

pytestmark = pytest.mark.redis


def _until(predicate, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_store_down_degrades_then_recovers(
    bundle_root, start_server, stub_for, throwaway_redis: ThrowawayRedis
) -> None:
    server = start_server(  # the default artwork: degraded answers are its first variants
        bundle_root, feature_store=f"redis://127.0.0.1:{throwaway_redis.port}/0",
        store_retry_s=0.2, bandit_policy="default",
    )  # fmt: skip
    stub = stub_for(server)
    request = pb.RecommendRequest(user_id="u006", k=10)
    first = stub.Recommend(request, timeout=10)
    assert not first.degraded
    bought = first.items[0].item_id
    event = pb.Event(event_id="d-1", user_id="u006", item_id=bought, type=pb.EVENT_TYPE_PURCHASE)
    assert stub.RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=10).accepted == 1
    assert bought not in {i.item_id for i in stub.Recommend(request, timeout=10).items}

    throwaway_redis.kill()
    started = time.monotonic()
    degraded = [stub.Recommend(request, timeout=10) for _ in range(20)]
    assert time.monotonic() - started < 5  # fails fast, no 20 timeouts in a row
    assert all(r.degraded and len(r.items) == 10 for r in degraded)
    assert all(i.artwork_propensity == 1.0 for r in degraded for i in r.items)
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    registry = server.servicer.metrics.registry
    assert registry.get_sample_value("recsvc_degraded_total", {"rpc": "Recommend"}) >= 20
    assert registry.get_sample_value("recsvc_feature_store_up") == 0

    throwaway_redis.start()
    _until(lambda: not stub.Recommend(request, timeout=10).degraded)
    assert registry.get_sample_value("recsvc_feature_store_up") == 1
    again = pb.Event(event_id="d-2", user_id="u006", item_id=bought, type=pb.EVENT_TYPE_PURCHASE)
    assert stub.RecordEvents(pb.RecordEventsRequest(events=[again]), timeout=10).accepted == 1
    assert bought not in {i.item_id for i in stub.Recommend(request, timeout=10).items}
