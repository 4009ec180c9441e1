"""Property-based requests over a real channel: every RPC answers OK or INVALID_ARGUMENT
(SimilarItems also NOT_FOUND for an item the model does not know, FAILED_PRECONDITION for
one with neither interactions nor features), never INTERNAL or UNKNOWN, and the server is
still serving afterwards.

Fields get random unicode (any code point a protobuf string may hold), ids past the byte
limit, huge repeated fields, extreme integers and enum values the proto does not define;
whole bodies get random bytes (undecodable messages). Bounded: ~40 examples per RPC."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.serving.bundle_factory import item_id

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,  # nothing written under the repo (.hypothesis/)
)
OK_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
SIMILAR_CODES = OK_CODES | {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}

# Any code point a proto3 string can carry (no lone surrogates: not valid UTF-8).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
ids = st.one_of(
    text,
    st.sampled_from([item_id(j) for j in range(0, 160, 7)] + ["u001", "u007"]),
    st.text(min_size=60, max_size=400),  # around and past the 256-byte limit
)
int32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 10, 500, 501]))
int64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def id_lists(draw: st.DrawFn) -> list[str]:
    if draw(st.booleans()):
        return draw(st.lists(ids, max_size=30))
    # one id repeated up to past the 1000-entry limit
    return [draw(ids)] * draw(st.integers(0, 2500))


contexts = st.builds(pb.Context, region=text, attributes=st.dictionaries(text, text, max_size=80))


def _code(call: grpc.UnaryUnaryMultiCallable, request: object) -> grpc.StatusCode:
    try:
        call(request, timeout=20)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@FUZZ
@given(user=ids, k=int32, ctx=contexts, exclude=id_lists(), categories=id_lists())
def test_recommend(edge_stub: pb_grpc.RecommenderStub, user, k, ctx, exclude, categories) -> None:  # type: ignore[no-untyped-def]
    request = pb.RecommendRequest(
        user_id=user, k=k, context=ctx, exclude_item_ids=exclude, categories=categories
    )
    assert _code(edge_stub.Recommend, request) in OK_CODES


@FUZZ
@given(user=ids, items=id_lists(), ctx=contexts)
def test_rank_items(edge_stub: pb_grpc.RecommenderStub, user, items, ctx) -> None:  # type: ignore[no-untyped-def]
    request = pb.RankItemsRequest(user_id=user, item_ids=items, context=ctx)
    assert _code(edge_stub.RankItems, request) in OK_CODES


@FUZZ
@given(user=ids, items=id_lists(), ctx=contexts)
def test_select_artwork(edge_stub: pb_grpc.RecommenderStub, user, items, ctx) -> None:  # type: ignore[no-untyped-def]
    request = pb.SelectArtworkRequest(user_id=user, item_ids=items, context=ctx)
    assert _code(edge_stub.SelectArtwork, request) in OK_CODES


@FUZZ
@given(item=ids, k=int32)
def test_similar_items(edge_stub: pb_grpc.RecommenderStub, item, k) -> None:  # type: ignore[no-untyped-def]
    code = _code(edge_stub.SimilarItems, pb.SimilarItemsRequest(item_id=item, k=k))
    assert code in SIMILAR_CODES


events = st.builds(
    pb.Event,
    event_id=ids,
    request_id=text,
    user_id=ids,
    item_id=ids,
    variant_id=text,
    type=st.integers(-5, 12),  # proto3 enums are open: undefined values arrive as ints
    timestamp_ms=int64,
)


@FUZZ
@given(
    batch=st.one_of(
        st.lists(events, max_size=20),
        st.tuples(events, st.integers(0, 1200)).map(lambda p: [p[0]] * p[1]),
    )
)
def test_record_events(edge_stub: pb_grpc.RecommenderStub, batch) -> None:  # type: ignore[no-untyped-def]
    code = _code(edge_stub.RecordEvents, pb.RecordEventsRequest(events=batch))
    assert code in OK_CODES


RPCS = ["Recommend", "SimilarItems", "RankItems", "SelectArtwork", "RecordEvents"]


@FUZZ
@given(rpc=st.sampled_from(RPCS), body=st.binary(max_size=300))
def test_random_bytes(edge_channel: grpc.Channel, rpc: str, body: bytes) -> None:
    call = edge_channel.unary_unary(f"/recsvc.v1.Recommender/{rpc}")  # raw bytes both ways
    code = _code(call, body)
    allowed = SIMILAR_CODES if rpc == "SimilarItems" else OK_CODES
    assert code in allowed, (rpc, body)


@pytest.mark.parametrize("rpc", RPCS)
def test_undecodable_body_names_the_problem(edge_channel: grpc.Channel, rpc: str) -> None:
    call = edge_channel.unary_unary(f"/recsvc.v1.Recommender/{rpc}")
    with pytest.raises(grpc.RpcError) as err:
        call(b"\x0a\x02\xff\xfe", timeout=10)  # field 1 (a string) with bad UTF-8
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in err.value.details()


def test_server_still_serving(edge_channel: grpc.Channel, edge_stub) -> None:  # type: ignore[no-untyped-def]
    # Runs last in the module: after every example above, the same server answers.
    health = health_pb2_grpc.HealthStub(edge_channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    reply = edge_stub.Recommend(pb.RecommendRequest(user_id="u001", k=5), timeout=10)
    assert len(reply.items) == 5
