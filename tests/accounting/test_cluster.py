"""Redis Cluster: a real 3-master cluster (same redis-server binary, --cluster-enabled yes).

Every script's keys share the tenant's hash tag, so admit/settle/release/feedback run on one slot;
cross-tenant reads are merged at read time. These tests fail with CROSSSLOT if any script spans slots.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp

import orjson
import pytest
from redis.crc import key_slot

from accounting import Accountant, LedgerRecord, PlanEstimate, reports
from accounting import redis_keys as rk
from accounting.ids import new_request_id
from accounting.models import BudgetPolicy
from accounting.redis_client import parse_redis_url
from tests.accounting.test_race import PER_PROC, PROCS, _worker

PLAN = [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]


@pytest.mark.parametrize("tenant", ["acme", "a}b", "{x", "t:tier", "ü"])
def test_every_per_tenant_key_shares_the_tenant_slot(tenant):
    s = rk.scope_key("k_1")
    keys = [rk.tenant(tenant), rk.budget(tenant, s), rk.budgets_index(tenant), rk.budgets_version(tenant),
            rk.spend(tenant, s), rk.holds(tenant, rk.scope_tenant(tenant)), rk.ledger(tenant), rk.ledger_cold(tenant),
            rk.request(tenant, "r1"), rk.done(tenant, "r1"), rk.session(tenant, "s"), rk.rollup(tenant, "2026-01-01")]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert rk.tenant_of_key(rk.ledger(tenant)) == tenant


def test_url_forms():
    assert parse_redis_url("rediss://h:6380/1").kind == "single"
    t = parse_redis_url("redis+sentinel://u:p%40ss@s1:26379,s2/mymaster/2")
    assert (t.kind, t.hosts, t.service, t.db, t.password) == ("sentinel", [("s1", 26379), ("s2", 26379)],
                                                             "mymaster", 2, "p@ss")
    c = parse_redis_url("rediss+cluster://a:7000,b:7001")
    assert (c.kind, c.hosts, c.ssl) == ("cluster", [("a", 7000), ("b", 7001)], True)
    for bad in ("http://x", "redis+sentinel://h:1", "redis+cluster://a:1/3", ""):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


@pytest.fixture()
async def cacct(redis_cluster_url, settings, prices):
    a = await Accountant.connect(redis_cluster_url, settings, prices)
    yield a
    await a.close()


async def test_cluster_ledger_budgets_reports_across_masters(cacct, redis_cluster_server):
    tenants = [f"t{i}" for i in range(8)]
    masters = {redis_cluster_server.master_for(rk.ledger(t)).port for t in tenants}
    assert len(masters) >= 2, "tenants should spread over several masters"
    keys = {}
    rid = {(t, i): new_request_id() for t in tenants for i in range(6)}
    for t in tenants:
        plain, info = await cacct.keys.create(t, budget_usd=0.05, period="day")
        await cacct.budgets.set(BudgetPolicy(scope=rk.scope_tenant(t), limit_usd=1.0, period="month"))
        keys[t] = await cacct.authenticate(plain)
    for t, p in keys.items():
        for i in range(6):  # the sixth is over the key's $0.05
            try:
                adm = await cacct.admit(p, rid[t, i], PLAN)
            except Exception as e:  # noqa: BLE001
                assert i == 5 and type(e).__name__ == "BudgetExceeded"
                continue
            rec = LedgerRecord(request_id=rid[t, i], key_id=p.key_id, tenant=t, tier="fast", model="fast",
                               cost_usd=0.01)
            assert await cacct.settle(adm, rec)
        assert await cacct.feedback(p, rid[t, 0], score=0.5)
    for t in tenants:
        rows = await reports.report(cacct.redis, t, "1d", "tier")
        assert rows[0]["requests"] == 5 and rows[0]["rated"] == 1
        assert abs(rows[0]["cost_usd"] - 0.05) < 1e-12
    exported = await reports.export_rows(cacct.redis)
    assert sorted(r["request_id"] for r in exported) == sorted(rid[t, i] for t in tenants for i in range(5))
    assert sum(1 for r in exported if r["quality"] == 0.5) == len(tenants)
    assert sorted(await reports.tenants(cacct.redis)) == tenants
    shown = await cacct.budgets.show()
    assert len(shown) == 2 * len(tenants)
    assert len(await cacct.keys.list()) == len(tenants)
    assert await cacct.owner_of(rid["t3", 1]) == "t3"
    usage = await reports.usage(cacct.redis, "t2", keys["t2"].key_id)
    assert abs(usage["spend_usd"]["day"] - 0.05) < 1e-12 and len(usage["budgets"]) == 2


@pytest.mark.slow
async def test_cluster_budget_race_across_processes(redis_cluster_url, cacct, tmp_path):
    plain, info = await cacct.keys.create("race", budget_usd=1.00, period="day")
    ctx = mp.get_context("spawn")
    start, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(redis_cluster_url, plain, i, start, str(tmp_path / f"s{i}"), q))
             for i in range(PROCS)]
    for pr in procs:
        pr.start()
    start.set()
    results = [await asyncio.to_thread(q.get, True, 120) for _ in procs]
    for pr in procs:
        pr.join(10)
        assert pr.exitcode == 0
    assert sum(a for a, _ in results) == 100 and all(pending == 0 for _, pending in results)
    assert PER_PROC * PROCS == 500
    r = cacct.redis
    entries = await r.xrange(rk.ledger("race"))
    assert len(entries) == 100
    assert sum(round(orjson.loads(f[b"d"])["cost_usd"] * 1e9) for _, f in entries) == 1_000_000_000
    spend = await r.hgetall(rk.spend("race", rk.scope_key(info.key_id)))
    assert int(spend[b"t"]) == 1_000_000_000 and int(spend[b"reserved"]) == 0
    assert await r.zcard(rk.holds("race", rk.scope_key(info.key_id))) == 0


async def test_cluster_compaction_keeps_reports_and_exports(cacct, tmp_path):
    from accounting.cold import ColdLedger, compact_all
    from tests.accounting.test_cold import TENANTS, _seed, _views

    await _seed(cacct, n=9)
    before = await _views(cacct)
    cold = ColdLedger(str(tmp_path / "cold"))
    res = await compact_all(cacct.redis, cold, older_than_days=1e-9)
    assert sorted((r.tenant, r.rows) for r in res) == [(t, 11) for t in sorted(TENANTS)]
    for t in TENANTS:
        assert await cacct.redis.xlen(rk.ledger(t)) == 0
    assert await _views(cacct, cold) == before
