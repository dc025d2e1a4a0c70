"""Sentinel: Triage reaches the master through `redis+sentinel://`, and follows a failover.

A master, one replica and three sentinels, all the same redis-server binary (`--replicaof`,
`--sentinel`). The master is killed under load; Sentinel promotes the replica; admissions fail
open meanwhile, settles spool and replay. Every served request ends up in the ledger once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
import redis

from accounting import Accountant, AccountingSettings, LedgerRecord, PlanEstimate
from accounting import redis_keys as rk
from accounting.redis_cluster import _cluster_port
from accounting.redis_server import EmbeddedRedis

PLAN = [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]
COST = 0.00123


def _sentinel(d: Path, master_port: int) -> EmbeddedRedis:
    d.mkdir(parents=True, exist_ok=True)
    port = _cluster_port()
    conf = d / "sentinel.conf"  # sentinel rewrites its config file, so it must be a real, writable file
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {d}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 2\n"
        "sentinel down-after-milliseconds mymaster 800\n"
        "sentinel failover-timeout mymaster 4000\n"
        "sentinel parallel-syncs mymaster 1\n")
    return EmbeddedRedis(d, persist=False, port=port)  # for its port and stop(); started below


def _start_sentinel(s: EmbeddedRedis) -> EmbeddedRedis:
    """A sentinel needs its config file as the first argument, so it is launched here, not by start()."""
    import subprocess

    from accounting.redis_server import find_redis_server

    s.proc = subprocess.Popen([find_redis_server(), str(s.state_dir / "sentinel.conf"), "--sentinel",
                               "--logfile", str(s.state_dir / "redis.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with redis.Redis(port=s.port, socket_timeout=1) as c:
                c.ping()
                return s
        except redis.RedisError:
            assert time.monotonic() < deadline, "sentinel did not start"
            time.sleep(0.05)


def _wait(pred, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
async def test_sentinel_failover_under_load(tmp_path, prices):
    master = EmbeddedRedis(tmp_path / "m", persist=True).start()
    replica = EmbeddedRedis(tmp_path / "r", persist=True,
                            extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinels = [_start_sentinel(_sentinel(tmp_path / f"s{i}", master.port)) for i in range(3)]
    try:
        def replica_known() -> bool:
            with redis.Redis(port=sentinels[0].port) as c:
                reps = c.execute_command("SENTINEL", "REPLICAS", "mymaster")
                sents = c.execute_command("SENTINEL", "SENTINELS", "mymaster")
            return len(reps) == 1 and len(sents) == 2

        _wait(replica_known, what="sentinels to discover the replica and each other")
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster"
        acct = await Accountant.connect(url, AccountingSettings(
            spool_dir=str(tmp_path / "spool"), redis_timeout_s=1.0, connect_timeout_s=0.3, pool_wait_s=0.5,
            fail_open=True), prices)
        plain, _ = await acct.keys.create("sent", budget_usd=100.0, period="day")
        p = await acct.authenticate(plain)
        served = spooled = 0

        async def request(i: int) -> None:
            nonlocal served, spooled
            adm = await acct.admit(p, f"s-{i}", PLAN)
            await asyncio.sleep(0.002)
            ok = await acct.settle(adm, LedgerRecord(request_id=f"s-{i}", key_id=p.key_id, tenant="sent", tier="fast",
                                                     model="fast", cost_usd=COST))
            spooled += not ok
            served += 1

        sem = asyncio.Semaphore(8)

        async def bounded(i: int) -> None:
            async with sem:
                await request(i)
                await asyncio.sleep(0.01)  # spread the load over the failover window

        async def chaos() -> None:
            while served < 60:
                await asyncio.sleep(0.005)
            master.kill()

        await asyncio.gather(chaos(), *(bounded(i) for i in range(400)))

        def promoted() -> bool:
            with redis.Redis(port=sentinels[0].port) as c:
                host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            return int(port) == replica.port

        _wait(promoted, what="sentinel failover")
        for _ in range(200):
            if await acct.ready():
                await acct.replay_spool()
                if acct.spool.pending() == 0:
                    break
            await asyncio.sleep(0.05)
        assert acct.spool.pending() == 0
        assert spooled > 0, "killing the master should have cost some settles their connection"
        recs = [orjson.loads(f[b"d"]) for _, f in await acct.redis.xrange(rk.ledger("sent"))]
        ids = [r["request_id"] for r in recs]
        assert len(ids) == len(set(ids)) == served
        spent = int(await acct.redis.hget(rk.spend("sent", "tenant:sent"), "t"))
        assert spent == served * round(COST * 1e9)
        await acct.close()
    finally:
        for s in sentinels:
            s.stop()
        replica.stop()
        master.stop()
