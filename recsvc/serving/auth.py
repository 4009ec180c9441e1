"""Bearer-token auth of the Recommender RPCs: a ``grpc.aio`` server interceptor.

Only ``recsvc.v1.Recommender`` methods need the token. Health and reflection stay open, so
load balancers and ``grpcurl`` can probe a server without it. The token is compared in
constant time; a call without it, or with another one, ends UNAUTHENTICATED before any
handler runs, and is counted as ``recsvc_rpc_total{code="UNAUTHENTICATED"}``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from recsvc.serving.metrics import ServingMetrics
from recsvc.v1 import recommender_pb2 as pb

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
DENIED = "missing or wrong bearer token"  # the details of every refused call


class TokenCheck:
    """``ok(metadata)`` is True when auth is off or the call carries ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self.enabled = bool(token)
        self._expected = f"Bearer {token}".encode()

    def ok(self, metadata: Iterable[Any] | None) -> bool:
        if not self.enabled:
            return True
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses Recommender calls that do not carry ``authorization: Bearer <token>``."""

    def __init__(self, token: str, metrics: ServingMetrics) -> None:
        if not token:
            raise ValueError("BearerAuthInterceptor needs a token (install none when auth is off)")
        self._check = TokenCheck(token)
        self._prefix = f"/{SERVICE_NAME}/"
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if (
            handler is None  # no such method: UNIMPLEMENTED, as without auth
            or not method.startswith(self._prefix)
            or self._check.ok(details.invocation_metadata)
        ):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._denier(method[len(self._prefix) :], time.perf_counter())
        )

    def _denier(
        self, rpc_name: str, started: float
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
        """The handler of one refused call: aborts, then counts it like any other code."""

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            try:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, DENIED)
            finally:
                latency = self._metrics.rpc_latency.get(rpc_name)
                if latency is not None:  # the Recommender's RPCs (metrics.RPCS)
                    latency.observe(time.perf_counter() - started)
                    self._metrics.calls.labels(rpc_name, "UNAUTHENTICATED").inc()

        return deny
