"""The accountant's script calls (admit, settle, release, renew, refuse) on one pipelined connection.

Under load most of a worker's Redis cost is per call and per round trip in the client, not in the
scripts: redis-py encodes every argument generically, checks a connection out of the pool, wraps the
write in its retry machinery and parses each reply through several layers; and every socket write
wakes Redis. Here each call is packed straight to RESP bytes (`pack_evalsha`) and goes out on a
connection that carries only these calls: a lone call at the end of the current loop iteration; while
a round trip is out, new calls queue and leave together, in one write, once its replies are in. The
replies, which Redis sends in the order it got the commands, are parsed by hiredis as they arrive and
handed to their callers in that order. Each EVALSHA still runs atomically on its own, in the order
sent; a call's outcome (result, script error, connection error, timeout) is its own, exactly as if
sent alone.

- The connection is made by redis-py (auth, db, TLS, Sentinel's master lookup), then taken over.
- A script the server lost (restart, failover, SCRIPT FLUSH) answers NOSCRIPT without running: it is
  loaded (SCRIPT LOAD, pipelined ahead of it) and sent again, once.
- A connection that fails (stale after a Redis restart, a replica after a Sentinel failover) is
  replaced, and the calls it carried are sent again on the new one up to ``retries`` times: every
  script is idempotent.
- One deadline timer for all calls instead of a timeout per call: a call not answered within
  ``timeout_s`` fails with TimeoutError, and its connection, stuck or half-open, is dropped.
- Redis Cluster clients route per slot; they send every call on its own through redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, NoScriptError, ReadOnlyError, RedisError

_CRLF = b"\r\n"
_LEN = tuple(b"$%d\r\n" % n for n in range(256))  # bulk-string headers of the common lengths, made once
_MORE = object()  # hiredis: no complete reply buffered yet


def _arg(a: Any) -> bytes:
    """The uncommon argument types, as redis-py's Encoder treats them (bool is refused, not sent as 1)."""
    if isinstance(a, (bytes, bytearray, memoryview)):
        return bytes(a)
    if isinstance(a, bool) or not isinstance(a, (int, float, str)):
        raise DataError(f"Invalid input of type: '{type(a).__name__}'. Convert to a bytes, string, int or float first.")
    return a.encode() if isinstance(a, str) else repr(a).encode()


def pack_command(*parts: Any) -> bytes:
    """Any command as RESP bytes (the rare ones: SCRIPT LOAD)."""
    out = [b"*%d\r\n" % len(parts)]
    for a in parts:
        b = a.encode() if type(a) is str else (b"%d" % a if type(a) is int else _arg(a))
        out += (b"$%d\r\n" % len(b), b, _CRLF)
    return b"".join(out)


def pack_evalsha(sha: bytes, keys: list[Any], args: list[Any]) -> bytes:
    """EVALSHA sha numkeys *keys *args as RESP bytes, byte for byte what redis-py would send."""
    nk = b"%d" % len(keys)
    out = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$%d\r\n%b\r\n" % (3 + len(keys) + len(args), sha, len(nk), nk)]
    ap = out.append
    for seq in (keys, args):
        for a in seq:
            t = type(a)
            if t is str:
                b = a.encode()
            elif t is int:
                b = b"%d" % a
            elif t is bytes:
                b = a
            else:
                b = _arg(a)
            n = len(b)
            ap(_LEN[n] if n < 256 else b"$%d\r\n" % n)
            ap(b)
            ap(_CRLF)
    return b"".join(out)


class _Call:
    __slots__ = ("script", "packed", "fut", "deadline", "tries", "reloaded", "last", "sent")

    def __init__(self, script: Any, packed: bytes, fut: asyncio.Future[Any] | None, deadline: float,
                 sent: asyncio.Future[None] | None = None) -> None:
        self.script = script
        self.packed = packed
        self.fut = fut  # None: an internal command (SCRIPT LOAD) whose reply nobody awaits
        self.deadline = deadline
        self.sent = sent  # resolved once the call's bytes are written (the caller resolves it on failure)
        self.tries = 0
        self.reloaded = False
        self.last = False  # the last call of its write: its reply completes that round trip


class _Link(asyncio.Protocol):
    """One connection: calls written in order, replies matched to them in the same order."""

    def __init__(self, owner: ScriptBatcher, conn: Any, writer: asyncio.StreamWriter) -> None:
        self.owner = owner
        self.conn = conn
        self.writer = writer  # kept referenced: a collected StreamWriter closes its transport
        self.transport: Any = writer.transport
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error,
                                     notEnoughData=_MORE)
        self.sent: deque[_Call] = deque()
        self.writes = 0  # round trips not yet fully answered
        self.loaded: set[str] = set()  # scripts this link has been told to SCRIPT LOAD
        self.closed = False

    def data_received(self, data: bytes) -> None:
        reader, sent = self.reader, self.sent
        try:
            reader.feed(data)
            while not self.closed and (reply := reader.gets()) is not _MORE:
                c = sent.popleft()  # IndexError: a reply nobody asked for, the stream is out of step
                if c.last:
                    c.last = False
                    self.writes -= 1
                    if self.owner._queue:
                        self.owner._schedule()
                if isinstance(reply, RedisError):
                    self.owner._error(self, c, reply)
                elif c.fut is not None and not c.fut.done():
                    c.fut.set_result(reply)
        except Exception as e:  # noqa: BLE001 - protocol error or desync: this connection can't be trusted
            self.owner._drop(self, RedisConnectionError(f"Redis reply stream broken: {e!r}"))

    def eof_received(self) -> bool:
        return False  # close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._drop(self, RedisConnectionError(f"Connection to Redis lost: {exc!r}" if exc else
                                                    "Connection closed by Redis"))

    def close(self) -> None:
        self.closed = True
        try:
            self.transport.abort()
        except Exception:  # noqa: BLE001 - the loop that owned it may be gone
            pass


class ScriptBatcher:
    def __init__(self, redis: Any, timeout_s: float = 10.0, retries: int = 1, max_writes: int = 1) -> None:
        self.redis = redis
        # Round trips in flight at once. A write costs far more than its bytes (a loopback send runs the
        # receiver's TCP stack and wakes Redis), so a busy worker sends batches, a lone call goes at once.
        self.max_writes = max_writes
        self.timeout_s = timeout_s
        self.retries = retries
        # a cluster client routes per slot: every call goes on its own through redis-py
        self.direct = not isinstance(redis, Redis)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: _Link | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queue: list[_Call] = []  # waiting for the next write (or for a connection)
        self._flush_at: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._shas: dict[str, bytes] = {}

    async def run(self, script: Any, keys: list[Any], args: list[Any], sent: asyncio.Future[None] | None = None) -> Any:
        """The script's reply; raises its error reply, a connection error, or TimeoutError past ``timeout_s``.
        ``sent``, if given, is resolved as soon as the call is written to Redis (not on a cluster client)."""
        if self.direct:
            async with asyncio.timeout(self.timeout_s):
                return await script(keys=keys, args=args)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._reset(loop)
        sha = self._shas.get(script.sha)
        if sha is None:
            sha = self._shas[script.sha] = script.sha.encode()
        fut = loop.create_future()
        c = _Call(script, pack_evalsha(sha, keys, args), fut, loop.time() + self.timeout_s, sent)
        self._queue.append(c)
        link = self._link
        if self._flush_at is None and (link is None or link.writes < self.max_writes):
            self._flush_at = loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = loop.call_at(c.deadline, self._expire)
        return await fut

    async def close(self) -> None:
        for h in (self._flush_at, self._timer):
            if h is not None:
                h.cancel()
        self._flush_at = self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self._link is not None:
            self._drop(self._link, RedisConnectionError("accounting closed"), resend=False)
        self._fail(self._queue, RedisConnectionError("accounting closed"))
        self._queue = []

    # -- sending --------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_at = None
        link = self._link
        if link is not None and link.transport.is_closing():  # closed; its connection_lost is on its way
            self._drop(link, RedisConnectionError("Connection to Redis closed"))
            link = None
        if link is None:
            if self._connecting is None and self._queue and self._loop is not None:
                self._connecting = self._loop.create_task(self._connect())
            return
        if link.writes >= self.max_writes:
            return  # the reply that completes a round trip sends what queued meanwhile
        batch = [c for c in self._queue if c.fut is None or not c.fut.done()]  # a caller gone: not sent
        self._queue = []
        if batch:
            batch[-1].last = True
            link.writes += 1
            link.sent.extend(batch)
            link.transport.write(b"".join([c.packed for c in batch]))
            for c in batch:
                if c.sent is not None and not c.sent.done():
                    c.sent.set_result(None)

    def _schedule(self) -> None:
        if self._flush_at is None and self._loop is not None:
            self._flush_at = self._loop.call_soon(self._flush)

    async def _connect(self) -> None:
        try:
            # redis-py makes the connection (auth, db, TLS, Sentinel's master); the link then reads it
            conn = self.redis.connection_pool.make_connection()
            await conn.connect()
            reader, writer = conn._reader, conn._writer
            conn._reader = conn._writer = None  # the link owns the socket now, not the pool's object
            link = _Link(self, conn, writer)
            link.transport.set_protocol(link)
            if reader is not None and reader._buffer:  # nothing is expected after the handshake
                link.data_received(bytes(reader._buffer))
        except Exception as e:  # noqa: BLE001 - Redis unreachable: every call waiting for it fails alike
            self._connecting = None
            err = e if isinstance(e, (RedisError, OSError)) else RedisConnectionError(repr(e))
            queue, self._queue = self._queue, []
            self._fail(queue, err)
            return
        self._connecting = None
        self._link = link
        self._flush()

    # -- replies and failures -------------------------------------------------------------------

    def _error(self, link: _Link, c: _Call, err: RedisError) -> None:
        if isinstance(err, NoScriptError) and not c.reloaded and c.fut is not None:
            # the server lost its scripts and did not run this one: load it, then send the call again
            c.reloaded = True
            if c.script.sha not in link.loaded:
                link.loaded.add(c.script.sha)
                self._queue.append(_Call(None, pack_command("SCRIPT", "LOAD", c.script.script), None, c.deadline))
            self._queue.append(c)
            self._schedule()
            return
        if isinstance(err, ReadOnlyError) and c.tries < self.retries and c.fut is not None:
            # connected to a replica (the master we knew was demoted): a new connection finds the master
            link.sent.appendleft(c)  # unanswered, like the calls sent after it
            self._drop(link, RedisConnectionError("The previous master is now a replica"))
            return
        if c.fut is not None and not c.fut.done():
            c.fut.set_exception(err)

    def _drop(self, link: _Link, err: Exception, resend: bool = True) -> None:
        """Retire a failed connection; its unanswered calls go out again on a new one, ``retries`` times."""
        if link.closed:
            return
        link.close()
        if self._link is link:
            self._link = None
        again, lost = [], []
        while link.sent:
            c = link.sent.popleft()
            if c.fut is None or c.fut.done():
                continue
            if resend and c.tries < self.retries:
                c.tries += 1
                again.append(c)
            else:
                lost.append(c)
        self._fail(lost, err)
        if again:
            self._queue[:0] = again  # sent before anything still queued: keep that order
        if self._queue:
            self._schedule()

    @staticmethod
    def _fail(calls: list[_Call], err: BaseException) -> None:
        for c in calls:
            if c.fut is not None and not c.fut.done():
                c.fut.set_exception(err)

    def _expire(self) -> None:
        """The deadline timer: fail what is overdue, drop a connection that sat on a call that long."""
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        nxt: float | None = None
        link = self._link
        stuck = False
        for calls, on_link in ((link.sent if link is not None else (), True), (self._queue, False)):
            for c in calls:
                if c.fut is None or c.fut.done():
                    continue
                if c.deadline <= now:
                    c.fut.set_exception(TimeoutError("Redis did not answer in time"))
                    stuck = stuck or on_link
                elif nxt is None or c.deadline < nxt:
                    nxt = c.deadline
        if stuck and link is not None:
            self._drop(link, RedisConnectionError("Redis connection stuck; dropped"))
        if nxt is not None:
            self._timer = loop.call_at(nxt, self._expire)

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        """State from another (finished) event loop means nothing here."""
        if self._link is not None:
            self._link.closed = True
            try:
                self._link.transport.abort()
            except Exception:  # noqa: BLE001 - its loop is closed
                pass
        self._loop, self._link, self._connecting, self._queue = loop, None, None, []
        self._flush_at = self._timer = None
