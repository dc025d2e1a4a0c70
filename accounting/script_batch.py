"""Coalesces the accountant's script calls (admit, settle, release, renew) from concurrent requests
into one pipelined round trip.

Under load most of a worker's Redis cost is per round trip (a socket write and a read wake-up each),
not the scripts themselves. Up to ``max_inflight`` calls go straight out as before, so a lone request
waits for nothing; calls made while those are in flight queue, and the next free slot sends the whole
queue as one non-transactional pipeline. Each EVALSHA still runs atomically on its own, in the order
sent; a call's outcome (result, script error, connection error) is its own, exactly as if sent alone.
Clients without plain pipelines (Redis Cluster) send every call on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

_Call = tuple[Any, list[Any], list[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    __slots__ = ("redis", "max_inflight", "_inflight", "_queue", "_loop", "_tasks")

    def __init__(self, redis: Any, max_inflight: int = 2) -> None:
        self.redis = redis
        # a cluster client routes per slot; its pipeline does not carry scripts the way we need
        self.max_inflight = max_inflight if isinstance(redis, Redis) else 1 << 30
        self._inflight = 0
        self._queue: list[_Call] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # state from another (finished) event loop means nothing here
            self._loop, self._inflight, self._queue = loop, 0, []
        if self._inflight < self.max_inflight and not self._queue:
            self._inflight += 1
            try:
                return await script(keys=keys, args=args)
            finally:
                self._inflight -= 1
                self._drain()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, fut))
        self._drain()
        return await fut

    def _drain(self) -> None:
        if not self._queue or self._inflight >= self.max_inflight or self._loop is None:
            return
        batch, self._queue = self._queue, []
        self._inflight += 1
        t = self._loop.create_task(self._send(batch))
        self._tasks.add(t)  # a strong reference until done
        t.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            live = [c for c in batch if not c[3].done()]  # a caller that timed out meanwhile is not sent
            if not live:
                return
            try:
                async with self.redis.pipeline(transaction=False) as p:
                    for script, keys, args, _ in live:
                        # EVALSHA directly: the pipeline's script registry would add a SCRIPT EXISTS round trip
                        p.evalsha(script.sha, len(keys), *keys, *args)
                    results = await p.execute(raise_on_error=False)
            except Exception as e:  # the round trip itself failed: every call in it failed alike
                for *_, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                return
            for (script, keys, args, fut), r in zip(live, results):
                if isinstance(r, NoScriptError):
                    # the server lost its scripts (restart, failover) and did not run this one: send it
                    # alone, which loads the script first
                    try:
                        r = await script(keys=keys, args=args)
                    except Exception as e:
                        r = e
                if fut.done():
                    continue
                if isinstance(r, BaseException):
                    fut.set_exception(r)
                else:
                    fut.set_result(r)
        except BaseException as e:  # cancelled (shutdown): callers must not wait forever
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else ConnectionError("cancelled"))
            raise
        finally:
            self._inflight -= 1
            self._drain()
