"""ScriptBatcher: concurrent script calls share round trips, yet each gets exactly its own outcome."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from accounting.script_batch import ScriptBatcher

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('nope ' .. ARGV[1])"


async def test_concurrent_calls_each_get_their_own_result(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    try:
        incr, fail = r.register_script(INCR), r.register_script(FAIL)
        b = ScriptBatcher(r, max_inflight=1)
        await r.script_flush()  # the first pipelined call meets NOSCRIPT and must still run exactly once
        calls = [b.run(incr, ["k"], [i]) if i % 7 else b.run(fail, [], [i]) for i in range(1, 101)]
        out = await asyncio.gather(*calls, return_exceptions=True)
        for i, res in enumerate(out, start=1):
            if i % 7:
                assert isinstance(res, int)
            else:
                assert isinstance(res, ResponseError) and f"nope {i}" in str(res)
        # every increment applied once: the running totals are the prefix sums, in order sent
        assert int(await r.get("k")) == sum(i for i in range(1, 101) if i % 7)
        assert sorted(x for x in out if isinstance(x, int)) == sorted(set(x for x in out if isinstance(x, int)))
    finally:
        await r.aclose()


async def test_connection_failure_reaches_every_queued_caller(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    incr = r.register_script(INCR)
    b = ScriptBatcher(r, max_inflight=1)
    await b.run(incr, ["k2"], [1])
    dead = aioredis.from_url("redis://127.0.0.1:1")  # nothing listens on port 1
    b.redis = dead
    try:
        first = asyncio.ensure_future(b.run(incr, ["k2"], [1]))  # goes straight out on the live client
        rest = [asyncio.ensure_future(b.run(incr, ["k2"], [1])) for _ in range(5)]  # queued: the dead pipeline
        assert await first == 2
        for f in rest:
            with pytest.raises(RedisConnectionError):
                await f
    finally:
        await r.aclose()
        await dead.aclose()
