"""``recsvc serve`` as a real process (two workers on one port), ``recsvc query``, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsvc.serving.workers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _recsvc(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recsvc.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, **kw,
    )  # fmt: skip


def _wait_serving(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def test_serve_two_workers_query_and_sigterm(bundle_root: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RECSVC_AUTH_TOKEN": "cli-token"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsvc.cli", "serve", "--artifacts", str(bundle_root),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--feature-store", f"sqlite:///{tmp_path / 'store.sqlite'}", "--grace", "2"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_serving(port)
        table = _recsvc("query", "--user", "u001", "--k", "3", "--target", f"127.0.0.1:{port}",
                        env=env)  # fmt: skip
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].startswith("model ") and lines[1].split()[:2] == ["#", "item_id"]
        assert len(lines) == 5
        as_json = _recsvc("query", "--user", "x", "--region", "north", "--json", "--target",
                          f"127.0.0.1:{port}", env=env)  # fmt: skip
        assert len(json.loads(as_json.stdout)["items"]) == 10
        denied = _recsvc("query", "--user", "u001", "--target", f"127.0.0.1:{port}",
                         "--token", "wrong")  # fmt: skip
        assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    serving = [r for r in logs if r["msg"] == "serving"]
    assert len(serving) == 2 and len({r["pid"] for r in serving}) == 2
    assert sum(r["msg"] == "stopped" for r in logs) == 2


def test_serve_reports_bad_arguments(tmp_path: Path) -> None:
    missing = _recsvc("serve", "--artifacts", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--artifacts" in missing.stderr
    bad_tls = _recsvc("serve", "--artifacts", str(tmp_path), "--tls-cert", "x.pem")
    assert bad_tls.returncode == 2 and "tls" in bad_tls.stderr.lower()
