"""The key promise: ``export`` and the ``Recommend`` RPC give the same answer.

Same bundle, same feature store (profiles and events written through the real
RecordEvents RPC), a real gRPC server on a free port; exploration off (default policy).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from feature_store.factory import open_store
from recsvc.export.job import ExportOptions, prepare_export
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from training.bundle import Bundle

K = 6


@pytest.fixture
def served(export_bundle_root: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    from recsvc.serving.server import ServerThread
    from recsvc.settings import ServingSettings

    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    values: dict[str, Any] = {
        "artifacts": export_bundle_root,
        "host": "127.0.0.1",
        "port": 0,
        "feature_store": store_url,
        "experiments": False,
        "watch_interval_s": 5.0,
        "exposure_flush_s": 0.05,
        "grace_s": 1.0,
    }
    settings = ServingSettings(**values)
    server = ServerThread(settings).start()
    try:
        yield store_url, server.port
    finally:
        server.stop()


def _recommend(stub: pb_grpc.RecommenderStub, user: str) -> list[tuple[str, float, str]]:
    reply = stub.Recommend(pb.RecommendRequest(user_id=user, k=K), timeout=10)
    return [(i.item_id, i.score, i.artwork_variant_id) for i in reply.items]


def test_export_equals_recommend_rpc(
    served: tuple[str, int], export_bundle: Bundle, tmp_path: Path
) -> None:
    store_url, port = served
    store = open_store(store_url)
    # Unknown users with a stored profile (cold start by region) and one known user whose
    # stored profile moves them to another region.
    store.write_user_profiles([("new-de", {"region": "DE"}), ("u004", {"region": "CA"})])
    store.close()
    users = ["u000", "u001", "u002", "u003", "u004", "new-de", "ghost", "u010", "u011"]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RecommenderStub(channel)
    try:
        # Real-time events through the RPC: a purchase and clicks move the live vector
        # (fold-in) and remove the purchased item; an unknown user gets a history.
        before = _recommend(stub, "u001")
        bought = before[0][0]
        now = int(time.time() * 1000)
        events = [
            pb.Event(
                event_id="e1",
                user_id="u001",
                item_id=bought,
                type=pb.EVENT_TYPE_PURCHASE,
                timestamp_ms=now,
            ),
            pb.Event(
                event_id="e2",
                user_id="u002",
                item_id="i013",
                type=pb.EVENT_TYPE_CLICK,
                timestamp_ms=now,
            ),
            pb.Event(
                event_id="e3",
                user_id="u010",
                item_id="i020",
                type=pb.EVENT_TYPE_ADD_TO_CART,
                timestamp_ms=now,
            ),
            pb.Event(
                event_id="e4",
                user_id="ghost-with-events",
                item_id="i005",
                type=pb.EVENT_TYPE_CLICK,
                timestamp_ms=now,
            ),
        ]
        accepted = stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)
        assert accepted.accepted == len(events)
        users.append("ghost-with-events")
        online = {u: _recommend(stub, u) for u in users}
    finally:
        channel.close()
    assert bought not in [i for i, _, _ in online["u001"]]

    users_file = tmp_path / "users.txt"
    users_file.write_text("\n".join(users) + "\n")
    out = tmp_path / "export.parquet"
    options = ExportOptions(
        export_bundle.path,
        out,
        K,
        users=users_file,
        feature_store=store_url,
        progress=False,
        chunk_size=4,
    )
    manifest = prepare_export(options).run()
    frame = pd.read_parquet(out)

    for user in users:
        rows = frame[frame.user_id == user]
        expected = online[user]
        assert rows.item_id.tolist() == [i for i, _, _ in expected], user
        assert rows.artwork_variant_id.tolist() == [v for _, _, v in expected], user
        np.testing.assert_allclose(
            rows.score.to_numpy(), [s for _, s, _ in expected], rtol=1e-5, atol=1e-6
        )
    kinds = manifest["counts"]["by_kind"]
    assert kinds["new_with_events"] == 1  # ghost-with-events, folded in from its click
    assert kinds["popularity_region"] == 1  # new-de
    assert kinds["popularity_global"] == 1  # ghost
