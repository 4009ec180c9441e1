"""Store fixtures: one real store per backend (SQLite tmp file; Redis under a test prefix),
and a throwaway ``redis-server`` on a free port for fault tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from feature_store import OnlineStore, open_store

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


def store_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, dict[str, Any]]:
    """URL and settings of a fresh, empty store of ``backend`` for one test."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}", {}
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """A private ``redis-server`` (no persistence) that a test may kill, stop and restart."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server binary not installed")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(free_port())
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        import signal

        server.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
    server.kill()
