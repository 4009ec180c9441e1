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
from recsvc.bundle import load_bundle
from recsvc.export.job import ExportOptions, prepare_export
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc

K = 6


@pytest.fixture(params=["export_bundle_root", "trained_bundle_root"])
def bundle_root(request: pytest.FixtureRequest) -> Path:
    """Our controlled tiny bundle, and the shared one ``recsvc train`` made from demo data
    (its hybrid model, when trained, serves cold-start users from their features)."""
    return Path(request.getfixturevalue(request.param))


@pytest.fixture
def served(bundle_root: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    from recsvc.serving.server import ServerThread
    from recsvc.settings import ServingSettings

    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    values: dict[str, Any] = {
        "artifacts": bundle_root,
        "host": "127.0.0.1",
        "port": 0,
        "feature_store": store_url,
        "experiments": False,
        "bandit_policy": "default",  # exploration off, as the module docstring says
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


def _event(event_id: str, user: str, item: str, kind: Any) -> pb.Event:
    now = int(time.time() * 1000)
    return pb.Event(event_id=event_id, user_id=user, item_id=item, type=kind, timestamp_ms=now)


def test_export_equals_recommend_rpc(
    served: tuple[str, int], bundle_root: Path, tmp_path: Path
) -> None:
    store_url, port = served
    bundle = load_bundle(bundle_root)
    known = [str(u) for u in bundle.user_ids[:8]]
    items = [str(i) for i in bundle.item_ids]
    region = str(bundle.region_names[-1])
    donor = {c: str(v[5]) for c, v in bundle.user_features.items()}
    store = open_store(store_url)
    # Unknown users with a stored profile: by region only, and with every feature of a
    # known user (cold start from features when the bundle has the hybrid model); a known
    # user whose stored profile moves them to another region.
    store.write_user_profiles(
        [("new-region", {"region": region}), ("new-full", donor), (known[4], {"region": region})]
    )
    store.close()
    users = [*known, "new-region", "new-full", "ghost"]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RecommenderStub(channel)
    try:
        # Real-time events through the RPC: a purchase and clicks move the live vector
        # (fold-in) and remove the purchased item; an unknown user gets a history.
        bought = _recommend(stub, known[1])[0][0]
        events = [
            _event("e1", known[1], bought, pb.EVENT_TYPE_PURCHASE),
            _event("e2", known[2], items[13], pb.EVENT_TYPE_CLICK),
            _event("e3", known[6], items[20], pb.EVENT_TYPE_ADD_TO_CART),
            _event("e4", "ghost-with-events", items[5], pb.EVENT_TYPE_CLICK),
        ]
        accepted = stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10)
        assert accepted.accepted == len(events)
        users.append("ghost-with-events")
        online = {u: _recommend(stub, u) for u in users}
    finally:
        channel.close()
    assert bought not in [i for i, _, _ in online[known[1]]]

    users_file = tmp_path / "users.txt"
    users_file.write_text("\n".join(users) + "\n")
    out = tmp_path / "export.parquet"
    options = ExportOptions(
        bundle_root,
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
        assert len(expected) == K
        assert rows.item_id.tolist() == [i for i, _, _ in expected], user
        assert rows.artwork_variant_id.tolist() == [v for _, _, v in expected], user
        np.testing.assert_allclose(
            rows.score.to_numpy(), [s for _, s, _ in expected], rtol=1e-5, atol=1e-6
        )
    kinds = manifest["counts"]["by_kind"]
    assert kinds["known"] == len(known)
    assert kinds["new_with_events"] == 1  # ghost-with-events, folded in from its click
    assert kinds["popularity_global"] == 1  # ghost
    # new-region: regional popularity; new-full: the hybrid model if the bundle has one.
    if bundle.hybrid is None:
        assert kinds["popularity_region"] == 2
    else:
        assert kinds.get("popularity_region", 0) + kinds.get("cold_start_features", 0) == 2
        assert kinds.get("cold_start_features", 0) >= 1
