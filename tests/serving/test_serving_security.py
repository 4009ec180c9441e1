"""Bearer-token auth and TLS on a real server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc

REQUEST = pb.RecommendRequest(user_id="u000", k=3)


def test_auth_token_required_when_configured(bundle_root: Path, start_server, stub_for) -> None:
    server = start_server(bundle_root, auth_token="s3cret-token")
    stub = stub_for(server)
    for metadata in (
        None,
        [("authorization", "Bearer wrong")],
        [("authorization", "s3cret-token")],
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(REQUEST, timeout=10, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordEvents(pb.RecordEventsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = stub.Recommend(REQUEST, timeout=10, metadata=[("authorization", "Bearer s3cret-token")])
    assert len(ok.items) == 3


def test_auth_off_by_default(stub) -> None:
    assert len(stub.Recommend(REQUEST, timeout=10).items) == 3


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls(bundle_root: Path, start_server, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = start_server(bundle_root, tls_cert=cert, tls_key=key, auth_token="tok")
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", creds) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        resp = stub.Recommend(REQUEST, timeout=10, metadata=[("authorization", "Bearer tok")])
        assert len(resp.items) == 3
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    # A plaintext client cannot talk to the TLS port.
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plain:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.RecommenderStub(plain).Recommend(REQUEST, timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
