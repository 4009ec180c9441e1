"""Build and run the grpc.aio server: servicer, auth, health, reflection, hot swap, shutdown.

:func:`serve` runs until SIGTERM/SIGINT (or ``stop`` is set), then reports NOT_SERVING,
stops accepting calls, drains in-flight ones for up to ``grace_s``, and flushes the
exposure log. :class:`ServerThread` runs the same thing in a background thread (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from feature_store.base import OnlineStore
from feature_store.redis import public_url
from recsvc.errors import UsageError
from recsvc.experiments.router import ExperimentRouter
from recsvc.serving.auth import SERVICE_NAME, BearerAuthInterceptor
from recsvc.serving.hotswap import ModelHolder, load_model
from recsvc.serving.metrics import ServingMetrics
from recsvc.serving.preflight import check_port_free, check_tls_pair
from recsvc.serving.servicer import RecommenderServicer, add_to_server
from recsvc.serving.store_guard import ExposureLog, StoreGuard
from recsvc.settings import ServingSettings

log = logging.getLogger("recsvc.serving")


def limit_threads() -> None:
    """One thread per process for FAISS and BLAS: parallelism comes from workers, and a
    per-call thread pool would cost more than the tiny products it splits."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(1)
    threadpool_limits(1)


def _open_store(settings: ServingSettings) -> OnlineStore | None:
    if not settings.store_enabled:
        return None
    from feature_store.factory import open_store

    return open_store(settings.feature_store)


def _router(settings: ServingSettings, store: OnlineStore | None) -> ExperimentRouter | None:
    """Experiment definitions live in the store: none without one, or when turned off."""
    if store is None or not settings.experiments:
        return None
    return ExperimentRouter(store)


def _credentials(settings: ServingSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        key, cert = settings.tls_key.read_bytes(), settings.tls_cert.read_bytes()
    except OSError as exc:
        raise UsageError(f"--tls-cert/--tls-key: cannot read: {exc}") from None
    check_tls_pair(settings.tls_cert, settings.tls_key)
    return grpc.ssl_server_credentials([(key, cert)])


def _bind(server: grpc.aio.Server, address: str, creds: grpc.ServerCredentials | None) -> int:
    try:
        if creds is not None:
            return int(server.add_secure_port(address, creds))
        return int(server.add_insecure_port(address))
    except RuntimeError as exc:  # grpc: "Failed to bind to address ..."
        raise UsageError(f"--port: cannot listen on {address}: {exc}") from None


async def serve(
    settings: ServingSettings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int, RecommenderServicer], None] | None = None,
    reuse_port: bool = False,
    worker: int = 0,
) -> None:
    """Serve until ``stop`` is set or a termination signal arrives."""
    limit_threads()
    creds = _credentials(settings)  # before loading anything: a bad pair fails fast
    if not reuse_port:  # workers share the port on purpose; their parent checked it
        check_port_free(settings.host, settings.port)
    metrics = ServingMetrics()
    loader = functools.partial(load_model, policy_params=settings.bandit_params)
    holder = await asyncio.to_thread(
        ModelHolder, settings.artifacts, settings.bandit_policy, metrics, loader
    )
    store = _open_store(settings)
    guard = StoreGuard(store, settings.store_retry_s, metrics)
    exposures = ExposureLog(guard, settings.exposure_buffer, metrics, settings.exposure_batch)
    router = _router(settings, store)
    servicer = RecommenderServicer(
        holder, guard, exposures, metrics,
        policy_name=settings.bandit_policy, router=router, async_reads=settings.store_async_reads,
        seen_events=settings.seen_event_types,
    )  # fmt: skip
    # No interceptor without a token: a call then pays nothing for auth.
    interceptors = (
        [BearerAuthInterceptor(settings.auth_token, metrics)] if settings.auth_token else []
    )
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    add_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    port = _bind(server, address, creds)
    if port == 0:
        raise UsageError(f"--port: cannot listen on {address}")
    if settings.metrics_port:
        metrics_host = settings.metrics_host or (
            "127.0.0.1" if settings.host == "127.0.0.1" else "0.0.0.0"
        )
        try:
            metrics.serve(settings.metrics_port + worker, metrics_host)
        except OSError as exc:
            raise UsageError(
                f"--metrics-port: cannot listen on {metrics_host}:"
                f"{settings.metrics_port + worker}: {exc.strerror or exc}"
            ) from None
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    tasks = [
        loop.create_task(
            holder.watch(
                settings.watch_interval_s,
                router.pinned_model_versions if router is not None else None,
            )
        ),
        loop.create_task(exposures.run(settings.exposure_flush_s)),
    ]
    log.info(
        "serving",
        extra={"port": port, "version": holder.model.version, "tls": creds is not None,
               "auth": bool(settings.auth_token), "store": public_url(settings.feature_store),
               "policy": settings.bandit_policy, "worker": worker},
    )  # fmt: skip
    if on_ready is not None:
        on_ready(port, servicer)
    try:
        await stop.wait()
    finally:
        log.info("draining", extra={"grace_s": settings.grace_s})
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.grace_s)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await exposures.flush()
        if router is not None:
            router.close()
        guard.close()
        log.info("stopped")


class ServerThread:
    """Run :func:`serve` on a background thread with its own event loop."""

    def __init__(self, settings: ServingSettings, timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.port = 0
        self.servicer: RecommenderServicer | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._timeout_s = timeout_s
        self._thread = threading.Thread(target=self._main, name="recsvc-server", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self.settings, stop=self._stop, on_ready=self._on_ready)

        try:
            asyncio.run(run())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def _on_ready(self, port: int, servicer: RecommenderServicer) -> None:
        self.port, self.servicer = port, servicer
        self._ready.set()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self._timeout_s):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=self._timeout_s)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
