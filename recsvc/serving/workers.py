"""``--workers N``: N server processes on one port (SO_REUSEPORT, the kernel balances).

Children are forked before any gRPC object exists (gRPC does not survive a fork once its
threads run); each builds its own server and loads its own bundle. The parent only
forwards SIGTERM/SIGINT and waits; if one child dies the others are stopped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from recsvc.settings import ServingSettings

log = logging.getLogger("recsvc.serving.workers")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _child(settings: ServingSettings, worker: int) -> int:
    from recsvc.serving.server import serve

    try:
        asyncio.run(serve(settings, reuse_port=True, worker=worker))
    except Exception:
        log.exception("worker %d failed", worker)
        return 1
    return 0


def run_workers(settings: ServingSettings) -> int:
    """Fork ``settings.workers`` servers; return when all have exited."""
    if settings.port == 0:
        settings = settings.model_copy(update={"port": free_port()})
    children: dict[int, int] = {}
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(settings, worker)
            finally:
                sys.stderr.flush()
                os._exit(code)
        children[pid] = worker

    def forward(signum: int, _frame: object) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("workers started", extra={"port": settings.port, "pids": sorted(children)})
    worst = 0
    while children:
        pid, status = os.wait()
        children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            worst = worst or (code if code > 0 else 1)
            forward(signal.SIGTERM, None)  # one worker down: stop all, let the supervisor restart
    return worst
