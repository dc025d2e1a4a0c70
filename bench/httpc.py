"""A minimal keep-alive HTTP/1.1 client on raw asyncio protocols, for load generation.

aiohttp/httpx spend more CPU per request than the proxies under test do; on a
2-core box that would make the client the bottleneck. This client only does
what the bench needs: POST/GET, Content-Length or chunked responses, and
arrival timestamps of SSE content events (for TTFT and inter-chunk jitter).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

_CONTENT = re.compile(rb'"content":\s*"[^"]')
_clock = time.perf_counter


class Result:
    __slots__ = ("status", "body", "t_first", "t_events", "t_end", "headers")

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.t_first: float | None = None   # first SSE event carrying content
        self.t_events: list[float] = []     # arrival time of every content event
        self.t_end = 0.0
        self.headers: dict[bytes, bytes] = {}


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.buf = bytearray()
        self.fut: asyncio.Future[Result] | None = None
        self.res: Result | None = None
        self.track = False
        self.state = 0          # 0 headers, 1 fixed body, 2 chunked
        self.need = 0
        self.chunks: list[bytes] = []
        self.closed = False
        self.keep = True

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection closed mid-response"))

    def send(self, data: bytes, track: bool) -> asyncio.Future[Result]:
        self.fut = asyncio.get_running_loop().create_future()
        self.res = Result()
        self.track = track
        self.state = 0
        self.chunks = []
        self.transport.write(data)
        return self.fut

    def data_received(self, data: bytes) -> None:
        if self.track and self.state and self.res is not None:
            self._mark(data)
        self.buf += data
        try:
            self._parse()
        except Exception as e:  # a malformed response fails that request, not the run
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(e)
            self.transport.close()

    def _mark(self, data: bytes) -> None:
        n = len(_CONTENT.findall(data))
        if n:
            now = _clock()
            if self.res.t_first is None:
                self.res.t_first = now
            self.res.t_events.extend([now] * n)

    def _parse(self) -> None:
        res = self.res
        if res is None:
            return
        if self.state == 0:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).split(b"\r\n")
            del self.buf[:i + 4]
            res.status = int(head[0].split(b" ", 2)[1])
            hdrs = {}
            for line in head[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip()
            res.headers = hdrs
            self.keep = hdrs.get(b"connection", b"").lower() != b"close"
            if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
                self.state = 2
                self.need = -1
            else:
                self.state = 1
                self.need = int(hdrs.get(b"content-length", b"0"))
            if self.track and self.buf:
                self._mark(bytes(self.buf))
        if self.state == 1:
            if len(self.buf) >= self.need:
                res.body = bytes(self.buf[:self.need])
                del self.buf[:self.need]
                self._done()
            return
        while self.state == 2:
            if self.need < 0:
                j = self.buf.find(b"\r\n")
                if j < 0:
                    return
                size = int(bytes(self.buf[:j]).split(b";")[0], 16)
                del self.buf[:j + 2]
                if size == 0:
                    self.need = -2
                else:
                    self.need = size
            if self.need == -2:
                k = self.buf.find(b"\r\n")  # no trailers expected: just the final CRLF
                if k < 0:
                    return
                del self.buf[:k + 2]
                res.body = b"".join(self.chunks)
                self._done()
                return
            if len(self.buf) < self.need + 2:
                return
            self.chunks.append(bytes(self.buf[:self.need]))
            del self.buf[:self.need + 2]
            self.need = -1

    def _done(self) -> None:
        self.state = 0
        self.res.t_end = _clock()
        fut, self.fut = self.fut, None
        if not self.keep:
            self.transport.close()
            self.closed = True
        if fut is not None and not fut.done():
            fut.set_result(self.res)


class Pool:
    """Keep-alive connections to one host:port; grows on demand up to ``limit``."""

    def __init__(self, host: str, port: int, limit: int = 1024):
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[_Conn] = []
        self.count = 0
        self.sem = asyncio.Semaphore(limit)

    async def _get(self) -> _Conn:
        while self.idle:
            c = self.idle.pop()
            if not c.closed:
                return c
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(_Conn, self.host, self.port)
        self.count += 1
        return c

    async def request(self, raw: bytes, track: bool = False, timeout: float = 60.0) -> Result:
        async with self.sem:
            c = await self._get()
            try:
                res = await asyncio.wait_for(c.send(raw, track), timeout)
            except BaseException:
                c.transport.close()
                raise
            if not c.closed:
                self.idle.append(c)
            return res

    def close(self) -> None:
        for c in self.idle:
            c.transport.close()
        self.idle.clear()


def build_request(method: str, path: str, host: str, port: int, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}", "connection: keep-alive"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method == "POST":
        lines.append("content-type: application/json")
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
