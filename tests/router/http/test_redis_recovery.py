"""Redis restarts and stalls under load: the gateway fails closed while Redis is away and serves again
the moment it is back, with no burst of 503s from stale pooled connections or an open breaker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest
import yaml

from accounting.redis_server import EmbeddedRedis
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own: it gets restarted, which the session's shared server must not be."""
    srv = EmbeddedRedis(tmp_path / "redis-restart", persist=True).start()
    yield srv
    srv.stop()


@pytest.fixture()
def restart_proxy(tmp_path: Path, own_redis: EmbeddedRedis, mock_upstream) -> Iterator[Proxy]:
    # Defaults for everything Redis-related: they are what must hold on a loaded machine.
    cfg = make_config(mock_upstream.base_url, own_redis.url, accounting={"spool_dir": str(tmp_path / "spool")})
    path = tmp_path / "restart.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=own_redis.url,
                    server=server)
    finally:
        server.should_exit = True
        thread.join(15)


class Load:
    """Workers sending chat requests back to back; each result is (start time, status)."""

    def __init__(self, proxy: Proxy, key: str, workers: int = 12):
        self.client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=60)
        self.workers = workers
        self.results: list[tuple[float, int]] = []
        self.stop = False

    async def one(self, tag: str) -> None:
        t0 = time.monotonic()
        try:
            await self.client.chat.completions.create(model="small", messages=[{"role": "user", "content": tag}])
            self.results.append((t0, 200))
        except openai.APIStatusError as e:
            self.results.append((t0, e.status_code))

    async def worker(self, w: int) -> None:
        i = 0
        while not self.stop:
            await self.one(f"load {w} {i}")
            i += 1

    async def burst(self, n: int, tag: str) -> None:
        await asyncio.gather(*[self.one(f"{tag} {i}") for i in range(n)])


def test_redis_restart_under_load_then_zero_503(restart_proxy: Proxy, own_redis: EmbeddedRedis) -> None:
    key = restart_proxy.create_key("restart", budget_usd=100.0, period="total")

    async def run() -> tuple[Load, float]:
        load = Load(restart_proxy, key)
        tasks = [asyncio.create_task(load.worker(w)) for w in range(load.workers)]
        await load.burst(40, "warm")
        # Restart while the workers keep going: every pooled connection goes stale at once.
        await asyncio.to_thread(own_redis.stop)
        await load.burst(20, "down")
        await asyncio.to_thread(own_redis.start)
        back = time.monotonic()
        for b in range(5):
            await load.burst(40, f"after {b}")
        load.stop = True
        await asyncio.gather(*tasks)
        return load, back

    load, back = asyncio.run(run())
    before = [s for t, s in load.results if t < back]
    after = [s for t, s in load.results if t >= back]
    print(f"restart: {len(before)} requests before back ({before.count(503)} x 503), "
          f"{len(after)} after ({after.count(503)} x 503)")
    assert 503 in before, "while Redis was down, admission must fail closed"
    assert len(after) >= 200
    assert [s for s in after if s != 200] == [], f"{after.count(503)} of {len(after)} refused after Redis came back"


def test_stalled_redis_is_waited_for_not_an_outage(restart_proxy: Proxy, own_redis: EmbeddedRedis) -> None:
    """A Redis that stops answering for a moment (a busy host, a fork for a snapshot) is slow, not down."""
    key = restart_proxy.create_key("stall", budget_usd=100.0, period="total")
    pid = own_redis.proc.pid  # type: ignore[union-attr]

    async def run() -> Load:
        load = Load(restart_proxy, key, workers=8)
        tasks = [asyncio.create_task(load.worker(w)) for w in range(load.workers)]
        await load.burst(20, "warm")
        os.kill(pid, signal.SIGSTOP)
        try:
            # The stall is the fault being injected (longer than the old 2 s command timeout), not a wait
            # for something to happen.
            stalled = asyncio.create_task(load.burst(20, "stalled"))
            await asyncio.sleep(2.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        await stalled
        await load.burst(40, "after")
        load.stop = True
        await asyncio.gather(*tasks)
        return load

    load = asyncio.run(run())
    statuses = [s for _, s in load.results]
    print(f"stall: {len(statuses)} requests, {statuses.count(503)} x 503")
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
