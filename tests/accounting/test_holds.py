"""Spent versus held: a refusal caused only by other requests' holds is retryable (and waits briefly for
them); only money already spent makes it final. Plus the budget invariants, property-tested against the
real admit/settle/release scripts."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting import Accountant, AccountingSettings, BudgetExceeded, LedgerRecord, PlanEstimate
from accounting import redis_keys as rk
from accounting.ids import new_request_id
from accounting.models import usd

CENT = [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]


async def _acct(redis_url, prices, tmp_path, **kw) -> Accountant:
    return await Accountant.connect(redis_url, AccountingSettings(spool_dir=str(tmp_path / "spool"), **kw), prices)


def _record(adm, p, cost: float) -> LedgerRecord:
    return LedgerRecord(request_id=adm.request_id, key_id=p.key_id, tenant=p.tenant, tier="fast", model="fast",
                        cost_usd=cost)


async def test_refusal_by_holds_is_retryable_by_spend_is_final(redis_url, prices, tmp_path):
    acct = await _acct(redis_url, prices, tmp_path, hold_wait_s=0.0)
    try:
        plain, _ = await acct.keys.create("holds", budget_usd=0.05, period="total")
        p = await acct.authenticate(plain)
        adms = [await acct.admit(p, new_request_id(), CENT) for _ in range(5)]
        with pytest.raises(BudgetExceeded) as ei:
            await acct.admit(p, new_request_id(), CENT)
        e = ei.value
        assert e.retryable, "nothing is spent yet: only holds stand in the way"
        assert e.spent_usd == 0.0 and e.held_usd == pytest.approx(0.05)
        assert "spent $0.00" in e.message and "held by requests in flight $0.05" in e.message
        for a in adms:
            await acct.settle(a, _record(a, p, 0.01))
        with pytest.raises(BudgetExceeded) as ei:
            await acct.admit(p, new_request_id(), CENT)
        assert not ei.value.retryable, "the money is spent: retrying cannot help"
        assert ei.value.spent_usd == pytest.approx(0.05) and ei.value.held_usd == 0.0
    finally:
        await acct.close()


async def test_refusal_waits_for_holds_to_settle(redis_url, prices, tmp_path):
    acct = await _acct(redis_url, prices, tmp_path, hold_wait_s=30.0)
    try:
        plain, _ = await acct.keys.create("wait", budget_usd=0.05, period="total")
        p = await acct.authenticate(plain)
        adms = [await acct.admit(p, new_request_id(), CENT) for _ in range(5)]
        waiting = asyncio.create_task(acct.admit(p, new_request_id(), CENT))
        await asyncio.sleep(0.1)
        assert not waiting.done(), "a refusal caused by holds waits for them"
        await acct.settle(adms[0], _record(adms[0], p, 0.0))  # settled for less than it held
        adm = await waiting
        assert adm.reserved_usd == pytest.approx(0.01)
    finally:
        await acct.close()


async def test_small_limits_print_with_their_decimals(redis_url, prices, tmp_path):
    acct = await _acct(redis_url, prices, tmp_path, hold_wait_s=0.0)
    try:
        plain, _ = await acct.keys.create("tiny", budget_usd=0.003, period="total")
        p = await acct.authenticate(plain)
        with pytest.raises(BudgetExceeded) as ei:
            await acct.admit(p, new_request_id(), CENT)
        assert "limit $0.003" in ei.value.message
        assert "$0.01" in ei.value.message
    finally:
        await acct.close()
    assert usd(0.003) == "$0.003" and usd(1) == "$1.00" and usd(0.000000001) == "$0.000000001"


# ------------------------------------------------------------------ property: budget invariants

OPS = st.lists(st.tuples(st.sampled_from(["admit", "settle", "release", "settle_again"]),
                         st.integers(min_value=0, max_value=7),
                         st.integers(min_value=1, max_value=40)), min_size=1, max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, limit_m=st.integers(min_value=0, max_value=200))
def test_budget_invariants_hold_for_any_interleaving(redis_url, prices, tmp_path, ops, limit_m) -> None:
    """For any sequence of admits, settles (possibly repeated) and releases: spent + held never exceeds the
    limit, the reserved counter equals the holds in the zset, and nothing is charged twice."""

    async def run() -> None:
        r = aredis.Redis.from_url(redis_url)
        await r.flushall()
        acct = await _acct(redis_url, prices, tmp_path, hold_wait_s=0.0)
        try:
            limit = limit_m / 1000  # $0 .. $0.200
            plain, info = await acct.keys.create("prop", budget_usd=limit, period="total")
            p = await acct.authenticate(plain)
            scope = rk.scope_key(info.key_id)
            live: list = []
            settled: dict[str, float] = {}
            for op, i, size in ops:
                if op == "admit":
                    try:
                        live.append(await acct.admit(p, new_request_id(),
                                                     [PlanEstimate(tier="fast", model="fast", estimate_usd=size / 1000)]))
                    except BudgetExceeded:
                        pass
                elif live and op in ("settle", "release"):
                    adm = live.pop(i % len(live))
                    if op == "settle":
                        cost = adm.reserved_usd * (size % 11) / 10  # anywhere from nothing to the full hold
                        await acct.settle(adm, _record(adm, p, cost))
                        settled[adm.request_id] = cost
                    else:
                        await acct.release(adm)
                elif op == "settle_again" and settled:
                    rid = list(settled)[i % len(settled)]
                    assert await acct.settle(*_replay(p, rid, settled[rid])) is False
                st_ = await acct.budgets.show(scope)
                spent, held = st_[0]["spent_usd"], st_[0]["reserved_usd"]
                assert spent + held <= limit + 1e-9, (spent, held, limit)
                assert spent == pytest.approx(sum(settled.values()), abs=1e-9), "charged twice or lost"
                zs = await r.zrange(rk.holds(info.tenant, scope), 0, -1)
                assert sum(int(m.rsplit(b"|", 1)[1]) for m in zs) == round(held * 1e9)
        finally:
            await acct.close()
            await r.aclose()

    asyncio.run(run())


def _replay(p, rid: str, cost: float):
    """A second settle of an already-settled request, as a retry or a spool replay would send it."""
    from accounting.models import Admission

    adm = Admission(request_id=rid, plan_index=0, reserved_usd=0.0, tenant=p.tenant, key_id=p.key_id,
                    tier="fast", model="fast")
    return adm, _record(adm, p, cost)
