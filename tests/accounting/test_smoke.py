from __future__ import annotations

import pytest

from accounting import BudgetExceeded, BudgetPolicy, LedgerRecord, PlanEstimate, Usage
from accounting.ids import new_request_id


async def test_admit_settle_roundtrip(acct):
    plain, info = await acct.keys.create("acme", label="ci", budget_usd=0.05, period="day")
    p = await acct.authenticate(plain)
    assert p is not None and p.tenant == "acme" and p.key_id == info.key_id
    r1 = new_request_id()
    adm = await acct.admit(p, r1, [PlanEstimate(tier="fast", model="fast", estimate_usd=0.03)])
    assert adm.plan_index == 0 and adm.reserved_usd == pytest.approx(0.03)
    assert adm.remaining_usd == pytest.approx(0.02)
    with pytest.raises(BudgetExceeded) as ei:
        await acct.admit(p, "r2", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.03)])
    assert ei.value.scope == f"key:{info.key_id}"
    call = acct.upstream_call("fast", Usage(prompt_tokens=1000, completion_tokens=500))
    rec = LedgerRecord(request_id=r1, key_id=p.key_id, tenant=p.tenant, calls=[call])
    assert await acct.settle(adm, rec) is True
    assert await acct.settle(adm, rec) is False  # idempotent
    st = await acct.budgets.show(f"key:{info.key_id}")
    assert st[0]["spent_usd"] == pytest.approx(0.002)
    assert st[0]["reserved_usd"] == 0
    adm2 = await acct.admit(p, "r2", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.03)])
    assert adm2.remaining_usd == pytest.approx(0.05 - 0.002 - 0.03)
    assert await acct.feedback(p, r1, 0.8, "good") is True
    await acct.budgets.set(BudgetPolicy(scope="tenant:acme", limit_usd=1.0, period="month", soft_pct=0.2))
    adm3 = await acct.admit(p, "r3", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.001)])
    assert adm3.soft_warnings
