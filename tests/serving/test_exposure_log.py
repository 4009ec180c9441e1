"""The exposure log: batched off the request path, written early when a batch is full, and
nothing lost on graceful shutdown (real server, real channel, real SQLite and Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feature_store.factory import open_store
from recsvc.v1 import recommender_pb2 as pb


def _logged(url: str) -> dict[str, dict[str, Any]]:
    store = open_store(url)
    try:
        return {row["request_id"]: row for row in store.read_log("exposure")}
    finally:
        store.close()


def _recommend(stub: Any, n: int) -> list[pb.RecommendResponse]:
    users = ["u001", "u002", "u003", "u004", "u005", "visitor-x"]
    return [
        stub.Recommend(pb.RecommendRequest(user_id=users[i % len(users)], k=4), timeout=10)
        for i in range(n)
    ]


def test_a_full_batch_is_written_before_the_period(
    bundle_root: Path, start_server: Callable[..., Any], stub_for: Callable[..., Any],
    store_url: str,
) -> None:  # fmt: skip
    server = start_server(
        bundle_root, feature_store=store_url, exposure_flush_s=60.0, exposure_batch=5
    )
    stub = stub_for(server)
    first = _recommend(stub, 4)
    time.sleep(0.5)
    assert _logged(store_url) == {}  # 4 < 5 queued, and the period is a minute
    fifth = _recommend(stub, 1)
    deadline = time.monotonic() + 10
    while len(logged := _logged(store_url)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(logged) == {r.request_id for r in first + fifth}
    row = logged[fifth[0].request_id]
    assert row["item_ids"] == [item.item_id for item in fifth[0].items]
    assert row["variant_ids"] == [item.artwork_variant_id for item in fifth[0].items]


def test_graceful_shutdown_writes_every_queued_exposure(
    bundle_root: Path, start_server: Callable[..., Any], stub_for: Callable[..., Any],
    store_url: str,
) -> None:  # fmt: skip
    server = start_server(
        bundle_root, feature_store=store_url, exposure_flush_s=60.0, exposure_batch=10_000
    )
    responses = _recommend(stub_for(server), 40)
    assert len(server.servicer.exposures) == 40  # all still queued
    server.stop()
    logged = _logged(store_url)
    assert set(logged) == {r.request_id for r in responses}
    store = open_store(store_url)
    try:  # RecordEvents' index of what each request showed was written with them
        served = store.served_variants([r.request_id for r in responses])
    finally:
        store.close()
    for r in responses:
        assert served[r.request_id] == {i.item_id: i.artwork_variant_id for i in r.items}
