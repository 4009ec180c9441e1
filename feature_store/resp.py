"""The request read's own Redis connections: plain sockets, RESP3, replies parsed by hiredis.

Why not redis-py here: on this path its per-call machinery (pool checkout with a health
poll and metrics hooks, one ``read_response`` per reply) costs more CPU than the network
round trip itself (docs/benchmarks/feature_store.md). This module does only what
``RedisStore.read_user``/``get_counters`` need: send pre-packed commands, read N replies.
It keeps the store's fault rules: connect and socket timeouts on every operation, a broken
connection retried once on a fresh one (how pooled sockets heal after a Redis restart), and
only ``redis`` exception types escape, which the store turns into FeatureStoreUnavailable.

RESP3 because its replies arrive typed: HGETALL as a map, sorted-set scores as doubles, so
hiredis builds the ``dict``/``float`` objects in C instead of Python doing it per field.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis

WAIT_STEP_S = 0.0005  # poll interval while every connection is busy
RECV_BYTES = 65_536


def pack_command(*args: str | bytes) -> bytes:
    """RESP encoding of one command (what redis-py's ``pack_command`` does, minus overhead)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespConnection:
    """One socket and its reply parser; connects lazily, closes on any failure."""

    __slots__ = ("generation", "reader", "sock")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.reader: Any = None
        self.generation = -1

    def close(self) -> None:
        sock, self.sock, self.reader = self.sock, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def open(self, conns: RespConnections) -> None:
        self.close()
        try:
            sock = socket.create_connection(
                (conns.host, conns.port), timeout=conns.connect_timeout_s
            )
        except TimeoutError as exc:
            raise redis.TimeoutError(f"connecting to {conns.address}: timed out") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"connecting to {conns.address}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(conns.socket_timeout_s)
        self.sock, self.reader = sock, hiredis.Reader(encoding="utf-8")
        self.generation = conns.generation
        for reply in self.round_trip(conns.handshake, 2, conns.address):
            if isinstance(reply, Exception):  # a Redis < 6 (no RESP3), bad AUTH, bad DB
                self.close()
                raise redis.ConnectionError(f"{conns.address}: handshake refused: {reply}")

    def round_trip(self, packed: bytes, n_replies: int, address: str) -> list[Any]:
        """Send ``packed`` and read ``n_replies`` replies (error replies are returned as
        exception objects: the connection stays in sync, the caller decides)."""
        return self.read_replies(n_replies, address, send=packed)

    def read_replies(self, n_replies: int, address: str, send: bytes = b"") -> list[Any]:
        """Read ``n_replies`` replies of commands sent on this connection (``send`` first,
        when given); any failure other than an error reply closes the connection."""
        sock, reader = self.sock, self.reader
        assert sock is not None and reader is not None
        try:
            if send:
                sock.sendall(send)
            replies: list[Any] = []
            while len(replies) < n_replies:
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(RECV_BYTES)
                    if not data:
                        raise redis.ConnectionError(f"{address}: connection closed by server")
                    reader.feed(data)
                else:
                    replies.append(reply)
            return replies
        except TimeoutError as exc:
            self.close()
            raise redis.TimeoutError(f"{address}: timed out reading the reply") from exc
        except OSError as exc:
            self.close()
            raise redis.ConnectionError(f"{address}: {exc}") from exc
        except (hiredis.ProtocolError, UnicodeDecodeError) as exc:
            self.close()  # the stream is out of sync: never reuse it
            raise redis.DataError(f"{address}: unreadable reply: {exc}") from exc
        except BaseException:
            self.close()  # half-read replies would poison the next request
            raise


class RespConnections:
    """A bounded LIFO of :class:`RespConnection` to one Redis server, safe across threads
    and forks (a child process opens its own sockets)."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float,
        socket_timeout_s: float,
        limit: int,
    ) -> None:
        self.host, self.port, self.address = host, port, f"redis {host}:{port}/{db}"
        self.connect_timeout_s, self.socket_timeout_s = connect_timeout_s, socket_timeout_s
        hello: list[str | bytes] = [b"HELLO", b"3"]
        if password is not None:
            hello += [b"AUTH", username or "default", password]
        self.handshake = pack_command(*hello) + pack_command(b"SELECT", str(db))
        self.limit = limit
        self.wait_s = connect_timeout_s + socket_timeout_s  # as the redis-py pool waits
        self.generation = 0  # bumped when a socket breaks: older ones are reopened
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle: deque[RespConnection] = deque()
        self._created = 0

    def round_trip(self, packed: bytes, n_replies: int) -> list[Any]:
        """One request: replies in order; raises ``redis.RedisError`` subclasses only."""
        for attempt in (1, 2):
            conn = self._acquire()
            try:
                if conn.sock is None or conn.generation != self.generation:
                    conn.open(self)
                replies = conn.round_trip(packed, n_replies, self.address)
            except redis.ConnectionError:
                self.generation += 1  # the server likely restarted: every idle socket is stale
                if attempt == 2:
                    raise
                continue
            finally:
                self._idle.append(conn)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise redis.ResponseError(str(reply))
            return replies
        raise AssertionError("unreachable")

    def _acquire(self) -> RespConnection:
        if self._pid != os.getpid():
            self._reset()  # never share a parent's sockets
        try:
            return self._idle.pop()
        except IndexError:
            pass
        with self._lock:
            if self._created < self.limit:
                self._created += 1
                return RespConnection()
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            time.sleep(WAIT_STEP_S)
            try:
                return self._idle.pop()
            except IndexError:
                pass
        raise redis.ConnectionError(
            f"{self.address}: all {self.limit} connections busy for {self.wait_s:.2f}s"
        )

    def close(self) -> None:
        while True:
            try:
                self._idle.pop().close()
            except IndexError:
                return


def round_trips(requests: Sequence[tuple[RespConnections, bytes, int]]) -> list[list[Any]]:
    """Requests to several servers (``(connections, packed, n_replies)`` each) as one round
    trip: every request is written before any reply is read, so the servers work at the same
    time. Replies per request, error replies returned as exception objects. No retry: any
    failure closes every connection used (unread replies would poison them) and raises a
    ``redis`` error; the caller decides (the cluster store re-routes and retries)."""
    taken: list[tuple[RespConnections, RespConnection]] = []
    try:
        for conns, packed, _ in requests:
            conn = conns._acquire()
            taken.append((conns, conn))
            if conn.sock is None or conn.generation != conns.generation:
                conn.open(conns)
            assert conn.sock is not None
            try:
                conn.sock.sendall(packed)
            except OSError as exc:
                raise redis.ConnectionError(f"{conns.address}: {exc}") from exc
        out = [
            conn.read_replies(n, conns.address)
            for (conns, conn), (_, _, n) in zip(taken, requests, strict=True)
        ]
    except BaseException:
        for _, conn in taken:
            conn.close()
        raise
    finally:
        for conns, conn in taken:
            conns._idle.append(conn)
    return out


class _PipelineProtocol(asyncio.Protocol):
    """One RESP3 connection on an event loop, shared by every request of that loop: requests
    are written as they come and their replies read in order (Redis answers a connection's
    commands in order), so there is no checkout and no waiting for a free socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, address: str) -> None:
        self.loop, self.timeout_s, self.address = loop, timeout_s, address
        self.reader = hiredis.Reader(encoding="utf-8")
        self.transport: asyncio.Transport | None = None
        # Per request: [replies wanted, replies so far, future, deadline (loop time)].
        self.pending: deque[list[Any]] = deque()
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def request(self, packed: bytes, n_replies: int) -> asyncio.Future[list[Any]]:
        if self.closed or self.transport is None:
            raise redis.ConnectionError(f"{self.address}: connection closed")
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        deadline = self.loop.time() + self.timeout_s
        self.pending.append([n_replies, [], future, deadline])
        self.transport.write(packed)
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check_deadline)
        return future

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        try:
            reader.feed(data)
            while pending:
                reply = reader.gets()
                if reply is False:
                    return
                head = pending[0]
                replies = head[1]
                replies.append(reply)
                if len(replies) == head[0]:
                    pending.popleft()
                    if not head[2].done():  # its caller may have been cancelled
                        head[2].set_result(replies)
        except (hiredis.ProtocolError, UnicodeDecodeError) as exc:
            self.fail(redis.DataError(f"{self.address}: unreadable reply: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self.fail(redis.ConnectionError(f"{self.address}: connection lost{reason}"))

    def _check_deadline(self) -> None:
        """One timer for the connection, not one per request: armed at the oldest request's
        deadline; a request past it means the stream can no longer be trusted."""
        self._timer = None
        if not self.pending:
            return
        deadline = self.pending[0][3]
        if self.loop.time() >= deadline:
            self.fail(redis.TimeoutError(f"{self.address}: timed out reading the reply"))
        else:
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def fail(self, exc: Exception) -> None:
        """Close, and fail every request still waiting (their callers may retry)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()
        pending, self.pending = self.pending, deque()
        for _, _, future, _ in pending:
            if not future.done():
                future.set_exception(exc)


class AsyncRespConnections:
    """The request read for asyncio callers: one pipelined connection per event loop.

    Same rules as :class:`RespConnections`: connect and read timeouts (a request unanswered
    after ``socket_timeout_s`` closes the connection and fails every request on it), a
    connection error retried once on a fresh connection, only ``redis`` exception types
    escape. The reply wait does not block the event loop: other requests run meanwhile.
    """

    def __init__(self, conns: RespConnections) -> None:
        self._conns = conns
        self._protocol: _PipelineProtocol | None = None
        self._connecting: asyncio.Task[_PipelineProtocol] | None = None

    async def round_trip(self, packed: bytes, n_replies: int) -> list[Any]:
        """One request: replies in order; raises ``redis.RedisError`` subclasses only."""
        replies = await self._replies(packed, n_replies)
        for reply in replies:
            if isinstance(reply, Exception):
                raise redis.ResponseError(str(reply))
        return replies

    def submit(self, packed: bytes, n_replies: int) -> asyncio.Future[list[Any]]:
        """The request sent now; its replies, error replies returned as exception objects.
        While the loop's connection is open this is that request's own future (no coroutine
        or task per request: the cluster read sends to several nodes per call); otherwise a
        task that opens the connection first, with :meth:`round_trip`'s rules."""
        protocol = self._protocol
        if protocol is not None and not protocol.closed and protocol.loop is _running_loop():
            return protocol.request(packed, n_replies)
        return asyncio.ensure_future(self._replies(packed, n_replies))

    async def _replies(self, packed: bytes, n_replies: int) -> list[Any]:
        for attempt in (1, 2):
            try:
                protocol = self._protocol
                if protocol is None or protocol.closed or protocol.loop is not _running_loop():
                    protocol = await self._connect()
                return await protocol.request(packed, n_replies)
            except redis.ConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _connect(self) -> _PipelineProtocol:
        """The loop's connection, opened once however many requests ask at the same time."""
        loop = _running_loop()
        task = self._connecting
        if task is None or task.get_loop() is not loop or (task.done() and _failed(task)):
            task = self._connecting = loop.create_task(self._open(loop))
            task.add_done_callback(_failed)  # mark the error seen if every waiter left
        protocol = await asyncio.shield(task)
        if protocol.closed:  # opened, then lost before this caller woke: open again
            if self._connecting is task:
                self._connecting = None
            return await self._connect()
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _PipelineProtocol:
        c = self._conns
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _PipelineProtocol(loop, c.socket_timeout_s, c.address), c.host, c.port
                ),
                c.connect_timeout_s,
            )
        except TimeoutError as exc:
            raise redis.TimeoutError(f"connecting to {c.address}: timed out") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"connecting to {c.address}: {exc}") from exc
        for reply in await protocol.request(c.handshake, 2):
            if isinstance(reply, Exception):  # a Redis < 6 (no RESP3), bad AUTH, bad DB
                protocol.fail(redis.ConnectionError(f"{c.address}: handshake refused"))
                raise redis.ConnectionError(f"{c.address}: handshake refused: {reply}")
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.closed:
            loop = protocol.loop
            if loop.is_closed():
                return
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                protocol.fail(redis.ConnectionError("connection closed"))
            else:  # another thread's loop: close it there
                loop.call_soon_threadsafe(protocol.fail, redis.ConnectionError("closed"))


def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _failed(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` ended in an error (reading it marks it retrieved)."""
    return task.cancelled() or task.exception() is not None
