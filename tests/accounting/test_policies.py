"""Budget scopes, plan fallback, per-query caps, soft limits, periods."""

from __future__ import annotations

import pytest

from accounting import BudgetExceeded, BudgetPolicy, LedgerRecord, PlanEstimate
from accounting import redis_keys as rk

PLANS = [PlanEstimate(tier="deliberate", model="big", estimate_usd=0.5),
         PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]


async def _principal(acct, tenant="t", **kw):
    plain, info = await acct.keys.create(tenant, **kw)
    return await acct.authenticate(plain), info


async def test_first_fitting_plan_and_tier_scope(acct):
    p, _ = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t:tier:deliberate", limit_usd=0.4, period="day"))
    adm = await acct.admit(p, "r1", PLANS)
    assert adm.plan_index == 1 and adm.tier == "fast"  # deliberate doesn't fit its tier budget: downgrade
    assert adm.held_scopes == []  # no policy covers the fast plan: nothing to hold
    await acct.budgets.set(BudgetPolicy(scope="tenant:t:tier:deliberate", limit_usd=1.0, period="day"))
    adm = await acct.admit(p, "r2", PLANS)
    assert adm.plan_index == 0 and adm.held_scopes == ["tenant:t:tier:deliberate"]
    assert adm.remaining_usd == pytest.approx(0.5)


async def test_model_scope_on_key(acct):
    p, info = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope=f"key:{info.key_id}:model:fast", limit_usd=0.015, period="month"))
    await acct.admit(p, "a", PLANS[1:])
    with pytest.raises(BudgetExceeded) as ei:
        await acct.admit(p, "b", PLANS[1:])
    assert ei.value.scope == f"key:{info.key_id}:model:fast"
    assert ei.value.remaining_usd == pytest.approx(0.005)
    assert "remaining" in ei.value.message and ei.value.scope in ei.value.message


async def test_error_names_cheapest_plans_blocker(acct):
    p, _ = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t", limit_usd=0.001, period="total"))
    with pytest.raises(BudgetExceeded) as ei:
        await acct.admit(p, "x", PLANS)
    assert ei.value.scope == "tenant:t" and ei.value.limit_usd == pytest.approx(0.001)
    assert "$0.01 " in ei.value.message  # what the cheapest plan needed


async def test_per_query_cap_lowered_never_raised(acct):
    p, _ = await _principal(acct, max_cost_per_query=0.1)
    assert acct.effective_cap(p, 5.0) == 0.1
    assert acct.effective_cap(p, 0.02) == 0.02
    adm = await acct.admit(p, "c1", PLANS)
    assert adm.plan_index == 1  # 0.5 is over the key's cap
    with pytest.raises(BudgetExceeded) as ei:
        await acct.admit(p, "c2", PLANS, max_cost_usd=0.005)
    assert ei.value.scope == "per-query cap"


async def test_tenant_default_cap(acct):
    await acct.keys.set_tenant("capped", max_cost_per_query=0.2, store_prompts=True)
    p, _ = await _principal(acct, tenant="capped")
    assert p.max_cost_per_query == 0.2 and p.store_prompts


async def test_soft_limit_warns_but_admits(acct):
    p, _ = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t", limit_usd=0.005, period="day", mode="soft"))
    adm = await acct.admit(p, "s", PLANS[1:])
    assert adm.soft_warnings and "tenant:t" in adm.soft_warnings[0]


async def test_soft_pct_warning_on_hard_limit(acct):
    p, _ = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t", limit_usd=0.02, period="day", soft_pct=80))
    a1 = await acct.admit(p, "w1", PLANS[1:])
    assert a1.soft_warnings == []
    a2 = await acct.admit(p, "w2", PLANS[1:])
    assert a2.soft_warnings and a2.remaining_usd == pytest.approx(0.0)


async def test_remaining_covers_estimate_is_admitted(acct):
    """No request is refused while the remaining budget covers its estimate (boundary is inclusive)."""
    p, _ = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t", limit_usd=0.03, period="total"))
    for i in range(3):
        adm = await acct.admit(p, f"b{i}", PLANS[1:])
        await acct.settle(adm, LedgerRecord(request_id=f"b{i}", key_id=p.key_id, tenant="t", cost_usd=0.01))
    with pytest.raises(BudgetExceeded):
        await acct.admit(p, "b3", PLANS[1:])


async def test_settle_below_estimate_frees_the_difference(acct):
    p, _ = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t", limit_usd=0.02, period="month"))
    adm = await acct.admit(p, "u1", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.02)])
    await acct.settle(adm, LedgerRecord(request_id="u1", key_id=p.key_id, tenant="t", cost_usd=0.004))
    st = (await acct.budgets.show("tenant:t"))[0]
    assert st["spent_usd"] == pytest.approx(0.004) and st["reserved_usd"] == 0
    assert st["remaining_usd"] == pytest.approx(0.016)


async def test_failed_open_admission_is_still_metered(acct, redis_url):
    p, _ = await _principal(acct)
    from accounting import Admission

    adm = Admission(request_id="fo", plan_index=0, reserved_usd=0.0, failed_open=True, tenant="t",
                    key_id=p.key_id, tier="fast", model="fast")
    assert await acct.settle(adm, LedgerRecord(request_id="fo", key_id=p.key_id, tenant="t", cost_usd=0.003))
    assert await acct.budgets.spent("tenant:t") == pytest.approx(0.003)


async def test_model_scopes_charged_per_call_model(acct):
    from accounting import Usage

    p, info = await _principal(acct)
    await acct.budgets.set(BudgetPolicy(scope="tenant:t:model:big", limit_usd=1.0, period="day"))
    adm = await acct.admit(p, "fb", [PlanEstimate(tier="deliberate", model="big", estimate_usd=0.5)])
    calls = [acct.upstream_call("big", Usage(prompt_tokens=100, completion_tokens=10), status="error"),
             acct.upstream_call("fast", Usage(prompt_tokens=100, completion_tokens=50), hop="fallback")]
    rec = LedgerRecord(request_id="fb", key_id=p.key_id, tenant="t", tier="deliberate", model="fast", calls=calls,
                       decision={"signals": ["x"], "candidates": [], "rejected": []})
    await acct.settle(adm, rec)
    big, fast = 100 * 10e-6 + 10 * 40e-6, 100 * 1e-6 + 50 * 2e-6
    assert await acct.budgets.spent("tenant:t:model:big") == pytest.approx(big, abs=1e-12)
    assert await acct.budgets.spent(f"key:{info.key_id}:model:fast") == pytest.approx(fast, abs=1e-12)
    assert await acct.budgets.spent("tenant:t:tier:deliberate") == pytest.approx(big + fast, abs=1e-12)
    assert await acct.budgets.spent("tenant:t") == pytest.approx(big + fast, abs=1e-12)
    st = (await acct.budgets.show("tenant:t:model:big"))[0]
    assert st["reserved_usd"] == 0
    import orjson

    d = orjson.loads((await acct.redis.xrange(rk.ledger("t")))[0][1][b"d"])
    assert d["decision"]["signals"] == ["x"]
