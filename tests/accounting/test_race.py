"""Budget race: 4 OS processes, 500 concurrent admissions, $1.00 budget at $0.01 each."""

from __future__ import annotations

import asyncio
import multiprocessing as mp

import orjson
import pytest
import redis

from accounting import Accountant, AccountingSettings, BudgetExceeded, LedgerRecord, PlanEstimate, PriceBook, PriceSpec
from accounting import redis_keys as rk

PER_PROC = 125
PROCS = 4
FLAT = [PriceSpec(name="m", model_info={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})]


def _worker(url: str, api_key: str, proc: int, start, spool: str, q) -> None:
    async def main() -> tuple[int, int]:
        acct = await Accountant.connect(url, AccountingSettings(spool_dir=spool, redis_timeout_s=5.0),
                                        PriceBook.build(FLAT))
        p = await acct.authenticate(api_key)
        start.wait()

        async def one(i: int) -> int:
            rid = f"p{proc}-{i}"
            try:
                adm = await acct.admit(p, rid, [PlanEstimate(tier="fast", model="m", estimate_usd=0.01)])
            except BudgetExceeded:
                return 0
            await asyncio.sleep(0)  # let other requests interleave between admit and settle
            rec = LedgerRecord(request_id=rid, key_id=p.key_id, tenant=p.tenant, tier="fast", model="m",
                               cost_usd=0.01)
            assert await acct.settle(adm, rec)
            return 1

        got = await asyncio.gather(*(one(i) for i in range(PER_PROC)))
        pending = acct.spool.pending()
        await acct.close()
        return sum(got), pending

    q.put(asyncio.run(main()))


@pytest.mark.slow
async def test_budget_race_across_processes(redis_url, acct, tmp_path):
    plain, info = await acct.keys.create("race", budget_usd=1.00, period="day")
    ctx = mp.get_context("spawn")
    start, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(redis_url, plain, i, start, str(tmp_path / f"s{i}"), q))
             for i in range(PROCS)]
    for pr in procs:
        pr.start()
    await asyncio.sleep(0)
    start.set()
    results = [await asyncio.to_thread(q.get, True, 60) for _ in procs]
    for pr in procs:
        pr.join(10)
        assert pr.exitcode == 0
    admitted = sum(a for a, _ in results)
    assert all(pending == 0 for _, pending in results)
    assert admitted == 100

    r = redis.Redis.from_url(redis_url)
    entries = r.xrange(rk.ledger("race"))
    assert len(entries) == 100
    total_nusd = sum(round(orjson.loads(f[b"d"])["cost_usd"] * 1e9) for _, f in entries)
    assert total_nusd == 1_000_000_000  # exactly $1.00
    spend = r.hgetall(rk.spend("race", rk.scope_key(info.key_id)))
    assert int(spend[b"t"]) == 1_000_000_000
    assert int(spend[b"reserved"]) == 0
    assert r.zcard(rk.holds("race", rk.scope_key(info.key_id))) == 0
    r.close()
