"""Bearer-token auth (the server's interceptor) and TLS on a real server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc

REQUEST = pb.RecommendRequest(user_id="u000", k=3)


def test_auth_token_required_when_configured(bundle_root: Path, start_server, stub_for) -> None:
    server = start_server(bundle_root, auth_token="s3cret-token")
    stub = stub_for(server)
    for metadata in (
        None,  # no token
        [("authorization", "Bearer wrong")],  # wrong token
        [("authorization", "s3cret-token")],  # right token, no scheme
        [("authorization", "Bearer s3cret-token-and-more")],
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(REQUEST, timeout=10, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details() == "missing or wrong bearer token"
    with pytest.raises(grpc.RpcError) as err:
        stub.RecordEvents(pb.RecordEventsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = stub.Recommend(REQUEST, timeout=10, metadata=[("authorization", "Bearer s3cret-token")])
    assert len(ok.items) == 3
    # Refused calls are counted under their RPC, like any other status code.
    registry = server.servicer.metrics.registry
    denied = {"rpc": "Recommend", "code": "UNAUTHENTICATED"}
    assert registry.get_sample_value("recsvc_rpc_total", denied) == 4
    assert registry.get_sample_value("recsvc_rpc_total", {"rpc": "Recommend", "code": "OK"}) == 1
    assert (
        registry.get_sample_value(
            "recsvc_rpc_total", {"rpc": "RecordEvents", "code": "UNAUTHENTICATED"}
        )
        == 1
    )
    assert registry.get_sample_value("recsvc_rpc_latency_seconds_count", {"rpc": "Recommend"}) == 5


def test_every_recommender_rpc_needs_the_token_health_and_reflection_do_not(
    bundle_root: Path, start_server
) -> None:
    server = start_server(bundle_root, auth_token="tok")
    calls = {
        "Recommend": REQUEST,
        "SimilarItems": pb.SimilarItemsRequest(item_id="i000", k=2),
        "RankItems": pb.RankItemsRequest(user_id="u000", item_ids=["i000", "i001"]),
        "SelectArtwork": pb.SelectArtworkRequest(user_id="u000", item_ids=["i000"]),
        "RecordEvents": pb.RecordEventsRequest(),
    }
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        for name, request in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                getattr(stub, name)(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            getattr(stub, name)(request, timeout=10, metadata=[("authorization", "Bearer tok")])
        # Open without a token: health checks (load balancers) and reflection (grpcurl).
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(reflect.ServerReflectionInfo(iter([ask]), timeout=10))
        names = {s.name for s in answer.list_services_response.service}
        assert "recsvc.v1.Recommender" in names
        # A method the server does not have is UNIMPLEMENTED, token or not (as without auth).
        missing = channel.unary_unary("/recsvc.v1.Recommender/Nope")
        with pytest.raises(grpc.RpcError) as err:
            missing(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


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
