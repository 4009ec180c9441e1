"""End to end: a real gRPC server routes users by a stored experiment and the report reads
the exposures it logged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from feature_store.factory import open_store
from recsvc.cli import main
from recsvc.experiments.report import build_report
from recsvc.experiments.router import ExperimentRouter

pytestmark = pytest.mark.slow


def test_server_applies_assignment_and_report_counts_it(
    tmp_path: Path, trained_bundle_root: Path, capsys
) -> None:
    grpc = pytest.importorskip("grpc")
    from recsvc.bundle import load_bundle
    from recsvc.serving.server import ServerThread
    from recsvc.settings import ServingSettings
    from recsvc.v1 import recommender_pb2 as pb
    from recsvc.v1 import recommender_pb2_grpc as pb_grpc

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    spec = {
        "name": "k-test",
        "salt": "k-test-1",
        "variants": [
            {"name": "control", "weight": 0.5},
            {"name": "short", "weight": 0.5, "overrides": {"k": 3}},
        ],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert main(["experiments", "create", "--file", str(path), "--feature-store", url]) == 0

    users = [str(u) for u in load_bundle(trained_bundle_root).user_ids[:40]]
    settings = ServingSettings.model_validate(
        {"artifacts": trained_bundle_root, "host": "127.0.0.1", "port": 0, "feature_store": url,
         "exposure_flush_s": 0.05, "grace_s": 0.5}
    )  # fmt: skip
    store = open_store(url)
    try:
        expected = {u: ExperimentRouter(store, background=False).assign(u, {}) for u in users}
        with ServerThread(settings) as server:
            channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            stub = pb_grpc.RecommenderStub(channel)
            for u in users:
                resp = stub.Recommend(pb.RecommendRequest(user_id=u, k=6))
                want = expected[u]
                assert want is not None
                assert (resp.experiment, resp.variant) == ("k-test", want.variant)
                assert len(resp.items) == (3 if want.variant == "short" else 6)
            channel.close()
        deadline = time.monotonic() + 10
        report = build_report(store, "k-test")
        while sum(v["users"] for v in report.variants) < len(users):
            assert time.monotonic() < deadline, report.variants
            time.sleep(0.1)
            report = build_report(store, "k-test")
    finally:
        store.close()
    by_name = {v["name"]: v for v in report.variants}
    for name in ("control", "short"):
        n = sum(1 for a in expected.values() if a is not None and a.variant == name)
        assert by_name[name]["users"] == n
        assert by_name[name]["exposed_users"] == n
    # No impression events were sent: served items stand in for impressions.
    assert by_name["short"]["impressions"] == 3 * by_name["short"]["users"]
