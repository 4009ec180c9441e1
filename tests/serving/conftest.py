"""Serving fixtures: a published hand-made bundle, real servers on free ports, stubs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from recsvc.serving.server import ServerThread
from recsvc.settings import ServingSettings
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.serving.bundle_factory import publish_bundle


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving-bundles")
    publish_bundle(root)
    return root


ServerFactory = Callable[..., ServerThread]
STORE_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh feature store per test: a SQLite file, or the test Redis under its own prefix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store-under-test.sqlite'}"
    url = request.getfixturevalue("redis_server_url")
    return f"{url}?prefix={request.getfixturevalue('redis_prefix')}&socket_timeout_s=2"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(root, **settings)``: a real grpc.aio server on a free port."""
    started: list[ServerThread] = []

    def start(root: Path, **overrides: Any) -> ServerThread:
        values: dict[str, Any] = {
            "artifacts": root,
            "host": "127.0.0.1",
            "port": 0,
            "feature_store": f"sqlite:///{tmp_path / 'store.sqlite'}",
            "watch_interval_s": 0.1,
            "exposure_flush_s": 0.05,
            "grace_s": 2.0,
        }
        values.update(overrides)
        server = ServerThread(ServingSettings(**values)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def stub_for() -> Iterator[Callable[[ServerThread], pb_grpc.RecommenderStub]]:
    channels: list[grpc.Channel] = []

    def make(server: ServerThread) -> pb_grpc.RecommenderStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return pb_grpc.RecommenderStub(channel)

    yield make
    for channel in channels:
        channel.close()


@pytest.fixture(scope="module")
def shared_server(
    bundle_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """One server for the read-mostly tests of a module (its own SQLite store)."""
    store = tmp_path_factory.mktemp("serving-store") / "store.sqlite"
    # Field(default, ...) reads as required to mypy without the pydantic plugin
    settings = ServingSettings(
        artifacts=bundle_root, host="127.0.0.1", port=0, feature_store=f"sqlite:///{store}",
        watch_interval_s=0.2, exposure_flush_s=0.05, grace_s=1.0,
        bandit_policy="default",  # deterministic artwork; the bandit: tests/serving/test_bandit_*
    )  # fmt: skip
    server = ServerThread(settings).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(shared_server: ServerThread) -> Iterator[pb_grpc.RecommenderStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{shared_server.port}")
    yield pb_grpc.RecommenderStub(channel)
    channel.close()
