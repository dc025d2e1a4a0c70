"""A lean HTTP/1.1 client for the OpenAI-compatible upstream path.

Why not aiohttp here: for a JSON POST to a keep-alive host most of its per-request machinery (cookies,
redirects, tracing, proxies, payload objects, multidicts, a timer per phase) goes unused, and it was about
a quarter of a governed request's CPU. This does only what that path needs: the request in one write,
httptools' response parser, a LIFO keep-alive pool per (scheme, host, port), gzip/deflate bodies, TLS
through asyncio's ssl, and one live timer per request.

Failures are the exceptions of ``http1_msg`` (mapped onto UpstreamError by the caller), ``TimeoutError``
for a total/idle timeout, or the ``OSError`` of a reset before any response byte (as aiohttp reported).
A request is sent a second time in one case only: a reused connection ended (EOF/reset) before any byte
of its answer, the stale keep-alive race; the retry goes on a new connection, which cannot be stale.
No proxy support: the aiohttp session this replaces did not read HTTP(S)_PROXY either (trust_env off).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import Any

import httptools

from router.upstream.http1_msg import (
    ConnectError,
    ConnectTimeout,
    Disconnected,
    HTTPClientError,
    Malformed,
    Response,
    Target,
    _header,
    _inflater,
    _Key,
    _Stale,
)

__all__ = ["ConnectError", "ConnectTimeout", "Disconnected", "Malformed", "Pool", "Response", "Target"]
HIGH_WATER = 1 << 18  # a stream's unread bytes above which the socket stops being read


class Conn(asyncio.Protocol):
    """One connection; between requests it sits idle in its pool. While streaming it is the response."""

    def __init__(self, pool: Pool, key: _Key):
        self.pool, self.key = pool, key
        self.loop = pool.loop
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.alive = self.busy = self.reused = self.counted = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._reset(False, None)

    def _reset(self, stream: bool, idle: float | None) -> None:
        self.stream, self.idle = stream, idle
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = self.head_done = self.done = self.got = self.info = self.until_eof = self.keep = False
        self.exc: BaseException | None = None
        self.enc: str | None = None
        self.unzip: Any = None
        self.last_rx = 0.0

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.alive = True

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.exc is not None:
            self._abort()  # bytes nobody asked for: the connection's framing can no longer be trusted
            return
        self.got = True
        if self.idle is not None:
            self.last_rx = self.loop.time()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            cause = e.__context__
            self._error(cause if isinstance(cause, HTTPClientError) else Malformed(str(e) or type(e).__name__))

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if not self.busy:
            self.pool._forget(self)
            return
        if self.done or self.exc is not None:
            return
        if self.head_done and self.until_eof and exc is None:
            self.on_message_complete()  # a body delimited by the end of the connection
        elif not self.got and self.reused and (exc is None or isinstance(exc, (ConnectionResetError, BrokenPipeError))):
            self._error(_Stale())
        elif not self.got and isinstance(exc, OSError):
            self._error(exc)
        else:
            self._error(Disconnected("the upstream closed the connection before the response was complete"))

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.done:
            self.keep = False  # a second response to one request: do not reuse this connection

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self.info = True  # 1xx: the real response follows
            return
        self.status = status
        self.keep = self.parser.should_keep_alive()
        framed = status in (204, 304)
        for k, v in self.headers:
            k = k.lower()
            if k == b"content-length" or (k == b"transfer-encoding" and b"chunked" in v.lower()):
                framed = True
            elif k == b"content-encoding":
                enc = v.strip().lower()
                if enc in (b"gzip", b"x-gzip", b"deflate"):
                    self.enc = "deflate" if enc == b"deflate" else "gzip"
        self.until_eof = not framed
        self.head_done = True
        if self.stream:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.done or self.info or self.exc is not None:
            return
        if not self.stream:
            self.chunks.append(body)
            return
        if self.enc is not None:
            if self.unzip is None:
                self.unzip = _inflater(self.enc, body)
            try:
                body = self.unzip.decompress(body)
            except zlib.error:
                self._error(Disconnected("cannot decode the response body"))
                return
            if not body:
                return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.info:
            self.info = False
            self.headers = []
            return
        if self.done:
            return
        if self.stream and self.unzip is not None:
            tail = self.unzip.flush()
            if tail:
                self.chunks.append(tail)
        self.done = True
        self._stop_timer()
        self._wake()

    # ------------------------------------------------------------ request side

    def _send(self, req: bytes, stream: bool, deadline: float | None, idle: float | None) -> asyncio.Future[None]:
        self._reset(stream, idle)
        self.busy = True
        if idle is not None:
            self.last_rx = self.loop.time()
            deadline = self.last_rx + idle
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._on_timer)
        self.waiter = w = self.loop.create_future()
        self.transport.write(req)
        return w

    def _on_timer(self) -> None:
        self.timer = None
        if self.done or self.exc is not None:
            return
        if self.idle is not None:
            now = self.loop.time()
            if self.paused or self.buffered:
                self.last_rx = now  # the consumer lags, the upstream does not: not an idle upstream
            if self.last_rx + self.idle > now:
                self.timer = self.loop.call_at(self.last_rx + self.idle, self._on_timer)
                return
        self._error(TimeoutError())

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def _error(self, e: BaseException) -> None:
        if self.exc is not None:
            return
        self.exc = e
        self.keep = False
        self._stop_timer()
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_exception(e)
        self._abort()

    def _abort(self) -> None:
        self.alive = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # ------------------------------------------------------------ streaming consumer

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def header_map(self) -> dict[str, str]:
        return Response(self.status, self.headers, b"").header_map()

    async def read(self) -> bytes:
        """The next body bytes as they arrived (decoded); b"" at the end."""
        while True:
            if self.chunks:
                out = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
                self.chunks = []
                self.buffered = 0
                if self.paused:
                    self.paused = False
                    self.transport.resume_reading()
                return out
            if self.exc is not None:
                raise self.exc
            if self.done:
                return b""
            self.waiter = w = self.loop.create_future()
            await w

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool when the response was read to its end cleanly, else closed. Idempotent."""
        if self.busy:
            self.pool._release(self)


class Pool:
    """Keep-alive connections per (scheme, host, port), newest first; at most ``limit`` open in all."""

    def __init__(self, limit: int = 4096, keepalive: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        self.limit, self.keepalive = limit, keepalive
        self.ssl_context = ssl_context
        self.loop = asyncio.get_running_loop()
        self._idle: dict[_Key, list[Conn]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def post(self, t: Target, body: bytes, total: float, connect: float) -> Response:
        """A POST read to its end; the body decoded."""
        c = await self._exchange(t, body, False, self.loop.time() + total, connect, None)
        status, headers, chunks, enc = c.status, c.headers, c.chunks, c.enc
        self._release(c)
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if enc is not None and raw:
            try:
                d = _inflater(enc, raw)
                raw = d.decompress(raw) + d.flush()
            except zlib.error:
                raise Disconnected("cannot decode the response body") from None
        return Response(status, headers, raw)

    async def open(self, t: Target, body: bytes, connect: float, idle: float) -> Conn:
        """A POST whose response head has arrived; read its body with ``read()``, then ``release()``."""
        return await self._exchange(t, body, True, None, connect, idle)

    async def _exchange(self, t: Target, body: bytes, stream: bool, deadline: float | None, connect: float,
                        idle: float | None) -> Conn:
        req = b"".join((t.head, b"%d\r\n\r\n" % len(body), body))
        fresh = False
        while True:
            c = await self._acquire(t, deadline, connect, fresh)
            try:
                await c._send(req, stream, deadline, idle)
                return c
            except _Stale:
                # The server closed this idle connection as the request went out, so it never read it:
                # once more on a new connection (a new one cannot be stale, so this cannot loop).
                self._release(c)
                fresh = True
            except BaseException:
                self._release(c)
                raise

    async def _acquire(self, t: Target, deadline: float | None, connect: float, fresh: bool) -> Conn:
        if not fresh:
            c = self._take(t.key)
            if c is not None:
                return c
        limit = self.loop.time() + connect
        if deadline is not None and deadline < limit:
            limit = deadline
        try:
            async with asyncio.timeout_at(limit):
                while self._open >= self.limit and not self._evict_one():
                    w = self.loop.create_future()
                    self._waiters.append(w)
                    await w
                    if not fresh and (c := self._take(t.key)) is not None:
                        return c
                self._open += 1
                try:
                    _, c = await self.loop.create_connection(
                        lambda: Conn(self, t.key), t.host, t.port,
                        ssl=self._ssl() if t.tls else None, server_hostname=t.host if t.tls else None)
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {t.host}:{t.port} in time") from None
        except OSError as e:
            raise ConnectError(t.host, t.port, e) from None
        c.counted = True
        if self.closed or not c.alive:
            self._drop(c)
            raise ConnectError(t.host, t.port, ConnectionResetError("closed before the request was sent"))
        return c

    def _ssl(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    def _take(self, key: _Key) -> Conn | None:
        idle = self._idle.get(key)
        while idle:
            c = idle.pop()
            if c.alive and not c.transport.is_closing() and self.loop.time() - c.idle_since < self.keepalive:
                return c
            self._drop(c)
        return None

    def _release(self, c: Conn) -> None:
        c.busy = False
        c._stop_timer()
        if c.done and c.keep and c.exc is None and c.alive and not self.closed and not c.transport.is_closing():
            now = self.loop.time()
            c.reused = True
            c.idle_since = now
            c.chunks = []
            idle = self._idle.setdefault(c.key, [])
            idle.append(c)
            while idle and now - idle[0].idle_since >= self.keepalive:
                self._drop(idle.pop(0))
            self._wake_one()
        else:
            self._drop(c)

    def _forget(self, c: Conn) -> None:
        idle = self._idle.get(c.key)
        if idle and c in idle:
            idle.remove(c)
        self._drop(c)

    def _drop(self, c: Conn) -> None:
        c._abort()
        if c.counted:
            c.counted = False
            self._open -= 1
            self._wake_one()

    def _evict_one(self) -> bool:
        oldest = min((cs[0] for cs in self._idle.values() if cs), key=lambda c: c.idle_since, default=None)
        if oldest is None:
            return False
        self._idle[oldest.key].remove(oldest)
        self._drop(oldest)
        return True

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for c in idle:
                self._drop(c)
        self._idle.clear()
