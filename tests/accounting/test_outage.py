"""Redis outages: bounded failure, fail closed/open by policy, spool + idempotent replay."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis

from accounting import (
    Accountant,
    AccountingSettings,
    AccountingUnavailable,
    BudgetExceeded,
    LedgerRecord,
    PlanEstimate,
)
from accounting import redis_keys as rk
from accounting.redis_server import EmbeddedRedis

COST = 0.00123
PLAN = [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]


def _settings(tmp_path, **kw) -> AccountingSettings:
    base = dict(spool_dir=str(tmp_path / "spool"), redis_timeout_s=0.2, connect_timeout_s=0.2,
                pool_wait_s=0.5)
    return AccountingSettings(**{**base, **kw})


@pytest.mark.slow
async def test_redis_killed_mid_load_ledger_equals_served(tmp_path, prices):
    state = tmp_path / "redis"
    srv = EmbeddedRedis(state, persist=True).start()
    acct = await Accountant.connect(srv.url, _settings(tmp_path, fail_open=True), prices)
    plain, info = await acct.keys.create("load", budget_usd=100.0, period="day")
    p = await acct.authenticate(plain)
    served = 0
    failed_open = 0
    restarted: list[EmbeddedRedis] = []

    async def request(i: int) -> None:
        nonlocal served, failed_open
        adm = await acct.admit(p, f"r{i}", PLAN)
        failed_open += adm.failed_open
        await asyncio.sleep(0.003)  # the "upstream call"
        rec = LedgerRecord(request_id=f"r{i}", key_id=p.key_id, tenant=p.tenant, tier="fast", model="fast",
                           cost_usd=COST)
        await acct.settle(adm, rec)  # never raises: spools when Redis is gone
        served += 1

    async def chaos() -> None:
        while served < 150:
            await asyncio.sleep(0.005)
        srv.kill()
        while served < 300:
            await asyncio.sleep(0.005)
        restarted.append(EmbeddedRedis(state, persist=True, port=srv.port).start())

    sem = asyncio.Semaphore(20)

    async def bounded(i: int) -> None:
        async with sem:
            await request(i)

    chaos_task = asyncio.create_task(chaos())
    await asyncio.gather(*(bounded(i) for i in range(600)))
    await chaos_task
    assert served == 600
    assert failed_open > 0, "the outage never reached admission"
    assert acct.spool.pending() > 0, "nothing was spooled: the kill missed the settle path"
    assert await acct.ready()
    await acct.replay_spool()
    assert acct.spool.pending() == 0
    r = redis.Redis.from_url(srv.url)
    try:
        entries = r.xrange(rk.ledger("load"))
        ids = [orjson.loads(f[b"d"])["request_id"] for _, f in entries]
        assert len(ids) == len(set(ids)) == served  # none lost, none doubled
        spent = int(r.hget(rk.spend("load", rk.scope_key(info.key_id)), "t"))
        assert spent == served * round(COST * 1e9)
        assert int(r.hget(rk.spend("load", rk.scope_key(info.key_id)), "reserved") or 0) == 0
    finally:
        r.close()
        await acct.close()
        for s in restarted:
            s.stop()
        srv.stop()


async def test_fail_closed_is_bounded_and_breaker_opens(tmp_path, prices):
    srv = EmbeddedRedis(tmp_path / "r", persist=False).start()
    acct = await Accountant.connect(srv.url, _settings(tmp_path), prices)
    plain, _ = await acct.keys.create("fc")
    p = await acct.authenticate(plain)
    srv.kill()
    for i in range(20):
        with pytest.raises(AccountingUnavailable):
            await acct.admit(p, f"x{i}", PLAN)
    assert acct.breaker.state == "open"  # how long the refusals take: bench/outage_bound.py
    assert await acct.authenticate(plain) == p  # cached principal still answers during the outage
    assert not await acct.ready()
    await acct.close()
    srv.stop()


async def test_replay_is_idempotent(acct, redis_url):
    plain, _ = await acct.keys.create("idem")
    p = await acct.authenticate(plain)
    adm = await acct.admit(p, "dup", PLAN)
    rec = LedgerRecord(request_id="dup", key_id=p.key_id, tenant=p.tenant, cost_usd=0.002)
    keys, args = acct._settle_call(adm, rec)
    # the settle reached Redis but the reply was lost: it is spooled anyway, and replayed
    assert await acct.settle(adm, rec)
    acct.spool.append({"keys": keys, "args": [a.decode() if isinstance(a, bytes) else a for a in args]})
    assert await acct.replay_spool() == 1
    r = redis.Redis.from_url(redis_url)
    assert r.xlen(rk.ledger("idem")) == 1
    assert int(r.hget(rk.spend("idem", "tenant:idem"), "t")) == 2_000_000
    r.close()


async def test_crashed_worker_lease_expires(redis_url, prices, tmp_path):
    acct = await Accountant.connect(redis_url, _settings(tmp_path, lease_ttl_s=0.2, hold_wait_s=0.0), prices)
    plain, _ = await acct.keys.create("lease", budget_usd=0.015, period="total")
    p = await acct.authenticate(plain)
    await acct.admit(p, "crashed", PLAN)  # never settled: the worker "died"
    with pytest.raises(BudgetExceeded) as ei:
        await acct.admit(p, "next", PLAN)
    assert ei.value.retryable  # a hold, not spent money
    await asyncio.sleep(0.3)
    adm = await acct.admit(p, "next", PLAN)  # the dead hold came back to the budget
    assert adm.remaining_usd == pytest.approx(0.005)
    await acct.close()


async def test_release_returns_hold(acct):
    plain, _ = await acct.keys.create("rel", budget_usd=0.01, period="month")
    p = await acct.authenticate(plain)
    adm = await acct.admit(p, "a", PLAN)
    await acct.release(adm)
    await acct.release(adm)  # twice is harmless
    adm2 = await acct.admit(p, "b", PLAN)
    assert adm2.remaining_usd == pytest.approx(0.0)
