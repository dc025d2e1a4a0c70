"""ScriptBatcher: concurrent script calls share one pipelined connection, yet each gets exactly its own
outcome; its RESP encoder sends what redis-py would."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

from accounting.redis_server import EmbeddedRedis
from accounting.script_batch import ScriptBatcher, pack_command, pack_evalsha

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('nope ' .. ARGV[1])"
ECHO = "return ARGV"
SHA = b"0123456789abcdef0123456789abcdef01234567"


def _redis_py(*parts: object) -> bytes:
    return b"".join(Connection().pack_command(*parts))


@pytest.mark.parametrize("keys,args", [
    ([], []),
    (["k"], ["v"]),
    (["t:{acme}:spend:key:abc", b"raw\x00\xffkey"], [0, -17, 2**63, "", b"", "\x1f".join("abc"), " ".join("123")]),
    (["caf\u00e9:\u65e5\u672c"], ["\U0001F600 prompt", '{"a": "\u00fc"}']),
    (["k"], ["x" * 255, "y" * 256, "z" * 70_000, b"b" * 300]),  # lengths around the cached headers and beyond
    (["k"], [1.5, 1e-05, 10**20]),
])
def test_evalsha_bytes_are_exactly_redis_pys(keys: list, args: list) -> None:
    assert pack_evalsha(SHA, keys, args) == _redis_py("EVALSHA", SHA.decode(), len(keys), *keys, *args)


def test_resp_spelled_out() -> None:
    assert pack_evalsha(SHA, ["k\u00e9"], [12, b"b", "s"]) == (
        b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n" + SHA + b"\r\n$1\r\n1\r\n$3\r\nk\xc3\xa9\r\n$2\r\n12\r\n$1\r\nb\r\n$1\r\ns\r\n")
    assert pack_command("SCRIPT", "LOAD", "return 1") == b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 1\r\n"


@pytest.mark.parametrize("bad", [True, None, object(), ["list"]])
def test_values_redis_py_refuses_are_refused(bad: object) -> None:
    with pytest.raises(DataError):
        pack_evalsha(SHA, ["k"], [bad])


@pytest.fixture()
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_url)
    yield r
    await r.aclose()


async def test_concurrent_calls_each_get_their_own_result(client: aioredis.Redis) -> None:
    incr, fail = client.register_script(INCR), client.register_script(FAIL)
    b = ScriptBatcher(client)
    try:
        await client.script_flush()  # every call meets NOSCRIPT first and must still run exactly once
        calls = [b.run(incr, ["k"], [i]) if i % 7 else b.run(fail, [], [i]) for i in range(1, 101)]
        out = await asyncio.gather(*calls, return_exceptions=True)
        for i, res in enumerate(out, start=1):
            if i % 7:
                assert isinstance(res, int)
            else:
                assert isinstance(res, ResponseError) and f"nope {i}" in str(res)
        # every increment applied once: the running totals are distinct prefix sums
        assert int(await client.get("k")) == sum(i for i in range(1, 101) if i % 7)
        totals = [x for x in out if isinstance(x, int)]
        assert len(totals) == len(set(totals))
        # and in the order sent
        assert totals == sorted(totals)
    finally:
        await b.close()


async def test_replies_come_back_as_redis_py_returns_them(client: aioredis.Redis) -> None:
    echo = client.register_script(ECHO)
    b = ScriptBatcher(client)
    try:
        args = ["caf\u00e9", 42, b"\x00\xff", "", "x" * 70_000]
        mine = await b.run(echo, [], args)
        assert mine == await echo(keys=[], args=args)
        assert mine == ["caf\u00e9".encode(), b"42", b"\x00\xff", b"", b"x" * 70_000]
    finally:
        await b.close()


async def test_a_script_error_is_that_calls_own(client: aioredis.Redis) -> None:
    incr, fail = client.register_script(INCR), client.register_script(FAIL)
    b = ScriptBatcher(client)
    try:
        out = await asyncio.gather(b.run(incr, ["e"], [1]), b.run(fail, [], ["x"]), b.run(incr, ["e"], [1]),
                                   return_exceptions=True)
        assert out[0] == 1 and out[2] == 2
        assert isinstance(out[1], ResponseError) and not isinstance(out[1], NoScriptError)
        assert await b.run(incr, ["e"], [1]) == 3  # the connection carries on after an error reply
    finally:
        await b.close()


async def test_noscript_twice_is_an_error_not_a_loop(client: aioredis.Redis) -> None:
    """A script that cannot be loaded (here: a SHA that names no script) fails as NOSCRIPT, once."""
    incr = client.register_script(INCR)

    class Ghost:
        sha = "f" * 40
        script = "return 1"  # loading this does not give the SHA above

    b = ScriptBatcher(client)
    try:
        with pytest.raises(NoScriptError):
            await b.run(Ghost(), [], [])
        assert await b.run(incr, ["g"], [5]) == 5
    finally:
        await b.close()


async def test_a_caller_gone_before_the_write_is_not_sent(client: aioredis.Redis) -> None:
    incr = client.register_script(INCR)
    b = ScriptBatcher(client)
    try:
        await b.run(incr, ["c"], [1])
        gone = asyncio.ensure_future(b.run(incr, ["c"], [100]))
        await asyncio.sleep(0)  # its call is queued; the write happens on the next loop iteration
        gone.cancel()
        assert await b.run(incr, ["c"], [1]) == 2
    finally:
        await b.close()


async def test_connection_failure_reaches_every_caller() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1")  # nothing listens on port 1
    incr = dead.register_script(INCR)
    b = ScriptBatcher(dead)
    try:
        out = await asyncio.gather(*[b.run(incr, ["k"], [1]) for _ in range(5)], return_exceptions=True)
        assert all(isinstance(e, RedisConnectionError) for e in out), out
    finally:
        await b.close()
        await dead.aclose()


@pytest.fixture()
def own_redis(tmp_path: Path):
    srv = EmbeddedRedis(tmp_path / "redis-own", persist=True).start()
    yield srv
    srv.stop()


async def test_restart_is_a_fresh_connection_not_an_error(own_redis: EmbeddedRedis) -> None:
    r = aioredis.from_url(own_redis.url)
    incr = r.register_script(INCR)
    b = ScriptBatcher(r)
    try:
        assert await b.run(incr, ["r"], [1]) == 1
        await asyncio.to_thread(own_redis.stop)
        await asyncio.to_thread(own_redis.start)
        # the old connection is dead and the new server has no scripts: reconnect, load, run
        assert await b.run(incr, ["r"], [1]) == 2
    finally:
        await b.close()
        await r.aclose()


async def test_a_dropped_connection_resends_what_it_carried(client: aioredis.Redis) -> None:
    incr = client.register_script(INCR)
    b = ScriptBatcher(client)
    try:
        await b.run(incr, ["d"], [1])
        link = b._link
        assert link is not None
        calls = [asyncio.ensure_future(b.run(incr, ["d"], [1])) for _ in range(10)]
        await asyncio.sleep(0)  # queued
        await asyncio.sleep(0)  # written
        assert link.sent
        link.connection_lost(ConnectionResetError("reset"))  # as if the server vanished mid-flight
        out = await asyncio.gather(*calls)
        # each caller got an answer; a call the server ran before the reset may have run twice
        # (the scripts are idempotent), so only the bounds are certain
        assert len(out) == 10 and 11 <= int(await client.get("d")) <= 21
        assert b._link is not link
    finally:
        await b.close()


async def test_a_stalled_redis_times_out_then_serves_again(own_redis: EmbeddedRedis) -> None:
    r = aioredis.from_url(own_redis.url)
    incr = r.register_script(INCR)
    b = ScriptBatcher(r, timeout_s=0.3)
    try:
        assert await b.run(incr, ["s"], [1]) == 1
        pid = own_redis.proc.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            out = await asyncio.gather(*[b.run(incr, ["s"], [1]) for _ in range(3)], return_exceptions=True)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(isinstance(e, TimeoutError) for e in out), out
        assert await b.run(incr, ["s"], [0]) >= 1  # a new connection; the stuck one was dropped
    finally:
        await b.close()
        await r.aclose()


async def test_sent_resolves_when_written_before_redis_answers(client: aioredis.Redis, redis_url: str) -> None:
    """What lets a handler answer its client once the settle is on the wire: `sent` is resolved by the
    write itself, while Redis (writes paused here) has not run the call yet; the call then runs once."""
    incr = client.register_script(INCR)
    b = ScriptBatcher(client)
    pauser = aioredis.from_url(redis_url)
    try:
        await b.run(incr, ["w"], [0])  # connected and loaded before Redis pauses
        await pauser.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        call = asyncio.ensure_future(b.run(incr, ["w"], [5], sent))
        await asyncio.wait_for(sent, 30)
        assert not call.done()  # written, not answered: Redis holds it
        await pauser.execute_command("CLIENT", "UNPAUSE")
        assert await asyncio.wait_for(call, 30) == 5
        assert int(await client.get("w")) == 5
    finally:
        await pauser.execute_command("CLIENT", "UNPAUSE")
        await pauser.aclose()
        await b.close()
