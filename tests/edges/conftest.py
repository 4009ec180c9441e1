"""Edge fixtures: one published hand-made bundle and one real server for the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recsvc.serving.server import ServerThread
from recsvc.settings import ServingSettings
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.serving.bundle_factory import publish_bundle


@pytest.fixture(scope="module")
def edge_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("edge-bundles")
    publish_bundle(root)
    return root


@pytest.fixture(scope="module")
def edge_server(
    edge_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    store = tmp_path_factory.mktemp("edge-store") / "store.sqlite"
    # Field(default, ...) reads as required to mypy without the pydantic plugin
    settings = ServingSettings(
        artifacts=edge_bundle, host="127.0.0.1", port=0, feature_store=f"sqlite:///{store}",
        watch_interval_s=5.0, exposure_flush_s=0.05, grace_s=1.0,
    )  # fmt: skip
    server = ServerThread(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge_channel(edge_server: ServerThread) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{edge_server.port}",
        options=[("grpc.max_send_message_length", 64 << 20)],
    )
    yield channel
    channel.close()


@pytest.fixture(scope="module")
def edge_stub(edge_channel: grpc.Channel) -> pb_grpc.RecommenderStub:
    return pb_grpc.RecommenderStub(edge_channel)
