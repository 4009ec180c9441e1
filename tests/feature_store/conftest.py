"""Store fixtures: one real store per backend (SQLite tmp file; Redis under a test prefix;
a local Redis Cluster of 3 masters + 3 replicas, ``tests/fixtures/redis_cluster.py``, one
per session). The fault tests' throwaway ``redis-server`` is in
``tests/fixtures/redis_server.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from feature_store import OnlineStore, open_store

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
]


def store_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, dict[str, Any]]:
    """URL and settings of a fresh, empty store of ``backend`` for one test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}", {}
    if backend == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        prefix = request.getfixturevalue("redis_cluster_prefix")
        return cluster.url, {"prefix": prefix, "socket_timeout_s": 2.0}
    url = request.getfixturevalue("redis_server_url")
    # a shared, loaded CI box can stall 100 ms; these tests check behaviour, not timeouts
    return url, {"prefix": request.getfixturevalue("redis_prefix"), "socket_timeout_s": 2.0}


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., OnlineStore]]:
    """Factory ``make_store(**settings)`` over the parametrized backend; closes what it opened."""
    url, base = store_url(request.param, request, tmp_path)
    opened: list[OnlineStore] = []

    def make(**settings: Any) -> OnlineStore:
        store = open_store(url, **{**base, **settings})
        opened.append(store)
        return store

    make.backend = request.param  # type: ignore[attr-defined]
    make.url = url  # type: ignore[attr-defined]
    make.settings = base  # type: ignore[attr-defined]
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., OnlineStore]) -> OnlineStore:
    return make_store()
