"""Two ``recsvc serve`` processes (replicas) sharing one feature store on a real Redis
Cluster (3 masters + 3 replicas on localhost, ``tests/fixtures/redis_cluster.py``).

* a click recorded on one replica moves the other replica's artwork choice within
  ``refresh_ms``; a request served by one replica is known to the other (the served index
  is in the store); an event id recorded on one is a duplicate on the other;
* a master killed while clients call both replicas: no Recommend call fails (degraded
  answers allowed), and RecordEvents works again after the promotion, by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feature_store import open_store
from feature_store.redis_cluster import RedisClusterStore, key_slot
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.fixtures.redis_cluster import RedisCluster
from tests.fixtures.redis_server import free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REFRESH_MS = 300
USER = "u003"
ITEM = "i002"  # three artwork variants: i002-v0, -v1, -v2
WINNER = "i002-v1"


class Replica:
    def __init__(self, root: Path, store_url: str, log: Path) -> None:
        self.port = free_port()
        params = f'{{"ts-item": {{"refresh_ms": {REFRESH_MS}}}}}'
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recsvc.cli", "serve", "--artifacts", str(root),
             "--host", "127.0.0.1", "--port", str(self.port), "--feature-store", store_url,
             "--bandit-policy", "ts-item", "--bandit-params", params, "--grace", "1",
             "--no-experiments", "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": "."},
        )  # fmt: skip
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.RecommenderStub(self.channel)

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "recsvc serve exited"
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica on port {self.port} did not become healthy")

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


@pytest.fixture(scope="module")
def cluster_store_url(redis_cluster: RedisCluster) -> Iterator[str]:
    prefix = f"recsvc-replicas-{uuid.uuid4().hex[:8]}:"
    yield f"{redis_cluster.url}?prefix={prefix}&socket_timeout_s=0.5&wait_timeout_ms=200"
    redis_cluster.delete_prefix(prefix)


@pytest.fixture(scope="module")
def replicas(
    bundle_root: Path, cluster_store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    pair = (
        Replica(bundle_root, cluster_store_url, logs / "a.log"),
        Replica(bundle_root, cluster_store_url, logs / "b.log"),
    )
    try:
        for replica in pair:
            replica.wait_serving()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


def _event(kind: pb.EventType, variant: str, request_id: str) -> pb.Event:
    return pb.Event(
        event_id=uuid.uuid4().hex, user_id=USER, item_id=ITEM, type=kind, variant_id=variant,
        request_id=request_id, timestamp_ms=int(time.time() * 1000),
    )  # fmt: skip


def _choose(replica: Replica) -> tuple[pb.ArtworkChoice, str]:
    """The replica's artwork choice for ITEM, and the request id that showed it."""
    reply = replica.stub.SelectArtwork(
        pb.SelectArtworkRequest(user_id=USER, item_ids=[ITEM]), timeout=10
    )
    (choice,) = reply.choices
    return choice, reply.request_id


def test_a_click_on_one_replica_moves_the_others_choice(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    before = [_choose(b)[0] for _ in range(30)]  # b caches the (empty) posteriors now
    assert {c.variant_id for c in before} == {"i002-v0", "i002-v1", "i002-v2"}
    assert max(c.propensity for c in before) < 0.6  # no evidence yet: near uniform

    first_batch: list[pb.Event] = []
    for n in range(45):  # on replica a: WINNER is always clicked, the others never
        served = a.stub.SelectArtwork(
            pb.SelectArtworkRequest(user_id=USER, item_ids=[ITEM]), timeout=10
        )
        (choice,) = served.choices
        events = [_event(pb.EVENT_TYPE_IMPRESSION, choice.variant_id, served.request_id)]
        if choice.variant_id == WINNER:
            events.append(_event(pb.EVENT_TYPE_CLICK, choice.variant_id, served.request_id))
        resp = a.stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)
        assert resp.accepted == len(events), resp.rejected
        if n == 0:
            first_batch = events
    recorded_at = time.monotonic()

    # The same event ids sent to replica b: duplicates (the markers are in the store).
    again = b.stub.RecordEvents(pb.RecordEventsRequest(events=first_batch), timeout=10)
    assert again.accepted == 0
    assert {r.event_id for r in again.rejected} == {e.event_id for e in first_batch}
    assert all("duplicate event_id" in r.reason for r in again.rejected)

    # Within refresh_ms replica b re-reads the counters replica a moved.
    time.sleep(max(0.0, REFRESH_MS / 1000 + 0.1 - (time.monotonic() - recorded_at)))
    after = [_choose(b)[0] for _ in range(30)]
    winner_share = sum(c.variant_id == WINNER for c in after) / len(after)
    assert winner_share >= 0.7, [c.variant_id for c in after]
    assert min(c.propensity for c in after if c.variant_id == WINNER) > 0.8

    # A request served by replica a, clicked through replica b: b finds what a showed.
    served, request_id = _choose(a)
    cross = _event(pb.EVENT_TYPE_CLICK, served.variant_id, request_id)
    time.sleep(0.5)  # a's exposure flush (exposure_flush_s = 0.2 s)
    resp = b.stub.RecordEvents(pb.RecordEventsRequest(events=[cross]), timeout=10)
    assert resp.accepted == 1, resp.rejected


def test_master_killed_while_replicas_serve(
    replicas: tuple[Replica, Replica], redis_cluster: RedisCluster, cluster_store_url: str
) -> None:
    """No Recommend call fails while the master of the event log's slot dies and its
    replica takes over; RecordEvents works again afterwards without a restart."""
    a, b = replicas
    store = open_store(cluster_store_url)
    assert isinstance(store, RedisClusterStore)
    prefix = store.prefix
    victim = int(store._address(key_slot(prefix + "log:event")).rsplit(":", 1)[1])
    store.close()
    stop = threading.Event()
    stats: dict[str, Any] = {"ok": 0, "degraded": 0, "failed": []}

    def client(replica: Replica) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            user = f"u{n % 40:03d}"
            try:
                reply = replica.stub.Recommend(pb.RecommendRequest(user_id=user, k=5), timeout=5)
            except grpc.RpcError as exc:
                stats["failed"].append(f"{exc.code()}: {exc.details()}")
                continue
            stats["degraded" if reply.degraded else "ok"] += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=client, args=(r,)) for r in (a, b, a, b)]
    try:
        for th in threads:
            th.start()
        time.sleep(1.0)
        redis_cluster.kill(victim)
        killed_at = time.monotonic()
        recovered_after = None
        while time.monotonic() - killed_at < 20.0:
            served, request_id = _choose(a)
            event = _event(pb.EVENT_TYPE_IMPRESSION, served.variant_id, request_id)
            try:
                resp = a.stub.RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=5)
            except grpc.RpcError:
                time.sleep(0.1)  # the store is failing over: not accepted, retried
                continue
            if resp.accepted == 1 and time.monotonic() - killed_at > 0.5:
                recovered_after = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        ok_at_recovery = stats["ok"]
        time.sleep(1.5)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=10)
        redis_cluster.restart(victim)
    try:
        assert stats["failed"] == [], stats["failed"][:5]
        assert stats["ok"] > ok_at_recovery  # full answers again after the failover
        assert recovered_after is not None, "RecordEvents did not work again"
        assert recovered_after < 15.0
    finally:
        redis_cluster.wait_healthy()
