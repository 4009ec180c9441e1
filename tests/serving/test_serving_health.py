"""Health checking and server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def test_health_and_reflection(shared_server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{shared_server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "recsvc.v1.Recommender"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"recsvc.v1.Recommender", "grpc.health.v1.Health"} <= names
        files = list(
            reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="recsvc.v1.Recommender")]),
                timeout=10,
            )
        )  # fmt: skip
        assert files[0].file_descriptor_response.file_descriptor_proto


def test_metrics_count_calls(shared_server, stub) -> None:
    from recsvc.v1 import recommender_pb2 as pb

    stub.Recommend(pb.RecommendRequest(user_id="nobody", k=2), timeout=10)
    registry = shared_server.servicer.metrics.registry
    ok = registry.get_sample_value("recsvc_rpc_total", {"rpc": "Recommend", "code": "OK"})
    assert ok and ok >= 1
    count = registry.get_sample_value("recsvc_rpc_latency_seconds_count", {"rpc": "Recommend"})
    assert count and count >= 1
    assert registry.get_sample_value("recsvc_fallbacks_total", {"source": "global"}) >= 1
    version = shared_server.servicer.holder.model.version
    assert registry.get_sample_value("recsvc_model_info", {"version": version}) == 1


def test_metrics_http_endpoint(bundle_root, start_server, stub_for) -> None:
    import urllib.request

    from recsvc.serving.workers import free_port
    from recsvc.v1 import recommender_pb2 as pb

    port = free_port()
    server = start_server(bundle_root, metrics_port=port)
    stub_for(server).Recommend(pb.RecommendRequest(user_id="u000", k=3), timeout=10)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'recsvc_rpc_latency_seconds_count{rpc="Recommend"} 1.0' in text
    assert "recsvc_model_info{version=" in text and "recsvc_feature_store_up 1.0" in text
