"""Redis Cluster under node loss: an outage of one master, and a failover to its replica under load.

Nothing is charged twice (the settle script's done marker; replays are idempotent) and nothing is
lost beyond what the spool replays: every request served is in the ledger once the spool drains.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from accounting import Accountant, AccountingSettings, LedgerRecord, PlanEstimate
from accounting import redis_keys as rk
from accounting.redis_cluster import EmbeddedCluster

COST = 0.00123
PLAN = [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]
TENANTS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def _settings(tmp_path) -> AccountingSettings:
    return AccountingSettings(spool_dir=str(tmp_path / "spool"), redis_timeout_s=1.0, connect_timeout_s=0.3,
                              breaker_cooldown_s=0.2, pool_wait_s=0.5, fail_open=True)


async def _load_with_chaos(tmp_path, cl: EmbeddedCluster, prices, chaos) -> None:
    acct = await Accountant.connect(cl.url, _settings(tmp_path), prices)
    principals = {}
    for t in TENANTS:
        plain, _ = await acct.keys.create(t, budget_usd=100.0, period="day")
        principals[t] = await acct.authenticate(plain)
    victim_tenant = TENANTS[0]
    victim = cl.master_for(rk.ledger(victim_tenant))
    served: dict[str, int] = {t: 0 for t in TENANTS}
    total = spooled = 0

    async def request(i: int) -> None:
        nonlocal total, spooled
        t = TENANTS[i % len(TENANTS)]
        p = principals[t]
        adm = await acct.admit(p, f"{t}-{i}", PLAN)  # fail-open: served even while its slot is down
        await asyncio.sleep(0.002)  # the "upstream call"
        ok = await acct.settle(adm, LedgerRecord(request_id=f"{t}-{i}", key_id=p.key_id, tenant=t, tier="fast",
                                                 model="fast", cost_usd=COST))  # spools when its master is gone
        spooled += not ok
        served[t] += 1
        total += 1

    sem = asyncio.Semaphore(16)

    async def bounded(i: int) -> None:
        async with sem:
            await request(i)

    async def chaos_at() -> None:
        while total < 150:
            await asyncio.sleep(0.005)
        await chaos(victim)

    await asyncio.gather(chaos_at(), *(bounded(i) for i in range(600)))
    assert spooled > 0, "the chaos should have cost some settles their master"
    cl.wait_ok()
    for _ in range(200):  # drain the spool once the slot is served again
        await asyncio.sleep(0.05)
        if await acct.ready():
            await acct.replay_spool()
            if acct.spool.pending() == 0:
                break
    assert acct.spool.pending() == 0
    for t in TENANTS:
        recs = [orjson.loads(f[b"d"]) for _, f in await acct.redis.xrange(rk.ledger(t))]
        ids = [r["request_id"] for r in recs]
        assert len(ids) == len(set(ids)), f"{t}: a record was written twice"
        assert len(ids) == served[t], f"{t}: served {served[t]}, ledgered {len(ids)}"
        spent = int(await acct.redis.hget(rk.spend(t, rk.scope_tenant(t)), "t"))
        assert spent == served[t] * round(COST * 1e9), f"{t}: charged {spent}"
    await acct.close()


@pytest.mark.slow
async def test_cluster_master_outage_then_restart(tmp_path, prices):
    with EmbeddedCluster(tmp_path / "cl", masters=3, replicas=0) as cl:
        async def chaos(victim) -> None:
            victim.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cl.restart, victim)

        await _load_with_chaos(tmp_path, cl, prices, chaos)


@pytest.mark.slow
async def test_cluster_failover_under_load(tmp_path, prices):
    with EmbeddedCluster(tmp_path / "cl", masters=3, replicas=1, node_timeout_ms=1000) as cl:
        async def chaos(victim) -> None:
            victim.kill()  # its replica is promoted after the node timeout; the client follows MOVED

        await _load_with_chaos(tmp_path, cl, prices, chaos)
        assert len(cl.masters()) == 3
