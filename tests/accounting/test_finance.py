"""Finance views: integer nano-USD everywhere, refusals in the ledger, combinable report groupings,
every tenant at once, exports a spreadsheet reads exactly, hold renewal, shadow measurements."""

from __future__ import annotations

import asyncio
import csv
import io
from decimal import Decimal

import orjson
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from accounting import BudgetPolicy, LedgerRecord, PlanEstimate, UpstreamCall, Usage, reports
from accounting import redis_keys as rk
from accounting.evaluation import eval_rows, measured, routing_quality, training_rows
from accounting.models import NANO, usd_str
from router.commands.accounting import register


async def _serve(acct, p, rid, model="fast", tier="fast", prompt=333, completion=777, workflow="", cx=0.2):
    adm = await acct.admit(p, rid, [PlanEstimate(tier=tier, model=model, estimate_usd=0.05)])
    call = acct.upstream_call(model, Usage(prompt_tokens=prompt, completion_tokens=completion))
    rec = LedgerRecord(request_id=rid, key_id=p.key_id, tenant=p.tenant, tier=tier, model=model, complexity=cx,
                       calls=[call], workflow=workflow)
    assert await acct.settle(adm, rec)
    return rec


def test_usd_str_is_exact():
    assert usd_str(11_000) == "0.000011000"
    assert usd_str(-1_250_000_000) == "-1.250000000"
    assert usd_str(0) == "0.000000000"


async def test_nano_dollars_reconcile_ledger_counters_reports_exports(acct, tmp_path):
    key, _ = await acct.keys.create("acme")
    pa = await acct.authenticate(key)
    # odd token counts so every call's cost has a sub-nano-dollar remainder
    recs = []
    for i in range(37):
        recs.append(await _serve(acct, pa, f"r{i}", prompt=101 + i, completion=37 * i + 3,
                                 model="fast" if i % 3 else "big", tier="fast" if i % 3 else "deliberate",
                                 workflow="etl" if i % 2 else "chat"))
    led = [orjson.loads(f[b"d"]) for _, f in await acct.redis.xrange(rk.ledger("acme"))]
    ledger_sum = sum(r["cost_nusd"] for r in led)
    assert all(isinstance(r["cost_nusd"], int) and r["cost_nusd"] == sum(c["cost_nusd"] for c in r["calls"])
               for r in led)
    assert all(r["cost_usd"] == r["cost_nusd"] / NANO for r in led)
    counter = int(await acct.redis.hget(rk.spend("acme", rk.scope_tenant("acme")), "t"))
    rows = await reports.report(acct.redis, "acme", "1d", "tier")
    report_sum = reports.totals(rows)["cost_nusd"]
    exp = await reports.export_rows(acct.redis, "acme")
    export_sum = sum(r["cost_nusd"] for r in exp)
    csv_rows = list(csv.DictReader(io.StringIO(reports.write_export(exp, "csv").decode())))
    csv_sum = sum(int(Decimal(r["cost_usd"]) * NANO) for r in csv_rows)
    (tmp_path / "x.parquet").write_bytes(reports.write_export(exp, "parquet"))
    t = pq.read_table(tmp_path / "x.parquet").to_pylist()
    pq_sum = sum(int(r["cost_usd"] * NANO) for r in t)
    assert ledger_sum == counter == report_sum == export_sum == csv_sum == pq_sum
    assert sum(int(r["cost_nusd"]) for r in csv_rows) == ledger_sum
    # formats: ISO-8601 timestamps, decimal costs, no exponent notation
    assert csv_rows[0]["ts"].endswith("Z") and "T" in csv_rows[0]["ts"]
    assert all("e" not in r["cost_usd"].lower() for r in csv_rows)
    assert str(t[0]["ts"].tzinfo) in ("UTC", "+00:00")
    # combinable groupings add up to the same total
    for by in (["key"], ["tier", "model"], ["workflow"], ["day", "complexity"], ["tenant", "key", "tier"]):
        rows = await reports.report(acct.redis, "acme", "1d", by)
        assert reports.totals(rows)["cost_nusd"] == ledger_sum, by
    wf = {r["workflow"]: r for r in await reports.report(acct.redis, "acme", "1d", "workflow")}
    assert set(wf) == {"etl", "chat"} and wf["etl"]["requests"] == 18


async def test_refusals_are_ledgered_and_reported(acct):
    key, _info = await acct.keys.create("poor")
    kid = _info.key_id
    await acct.authenticate(key)
    await acct.budgets.set(BudgetPolicy(scope=f"key:{kid}", limit_usd=0.001, period="day"))
    rec = LedgerRecord(request_id="no1", key_id=kid, tenant="poor", tier="fast", model="fast", complexity=0.3,
                       reason="budget: key exhausted")
    await acct.refuse(rec, 2_500_000)
    led = [orjson.loads(f[b"d"]) for _, f in await acct.redis.xrange(rk.ledger("poor"))]
    assert led[0]["kind"] == "refusal" and led[0]["cost_nusd"] == 0 and led[0]["refused_estimate_nusd"] == 2_500_000
    rows = await reports.report(acct.redis, "poor", "1d", "tier")
    assert rows[0]["refused"] == 1 and rows[0]["refused_estimate_usd"] == pytest.approx(0.0025)
    assert rows[0]["requests"] == 0 and rows[0]["cost_nusd"] == 0
    exp = await reports.export_rows(acct.redis, "poor")
    assert exp[0]["kind"] == "refusal" and exp[0]["refused_estimate_nusd"] == 2_500_000
    assert "0.002500000" in reports.write_export(exp, "csv").decode()
    assert int(await acct.redis.hget(rk.spend("poor", f"key:{kid}"), "t") or 0) == 0


async def test_all_tenants_report_and_budgets_show_includes_keys(acct, redis_url):
    ka, _info = await acct.keys.create("t1")
    kida = _info.key_id
    kb, _ = await acct.keys.create("t2")
    await _serve(acct, await acct.authenticate(ka), "a1")
    await _serve(acct, await acct.authenticate(kb), "b1", model="big", tier="deliberate")
    rows = await reports.report(acct.redis, None, "1d", "tenant,tier")
    assert {(r["tenant"], r["tier"]) for r in rows} == {("t1", "fast"), ("t2", "deliberate")}
    await acct.budgets.set(BudgetPolicy(scope=f"key:{kida}", limit_usd=3))
    await acct.budgets.set(BudgetPolicy(scope="tenant:t1", limit_usd=30))
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    r = await asyncio.to_thread(CliRunner().invoke, app, ["budgets", "show", "--tenant", "t1", "--json", "--redis-url", redis_url])
    assert r.exit_code == 0, r.output
    assert {b["scope"] for b in orjson.loads(r.stdout)} == {"tenant:t1", f"key:{kida}"}
    r = await asyncio.to_thread(CliRunner().invoke, app, ["ledger", "report", "--by", "tenant", "--by", "model", "--json",
                                 "--redis-url", redis_url])
    assert r.exit_code == 0, r.output
    out = orjson.loads(r.stdout)
    assert {(x["tenant"], x["model"]) for x in out["rows"]} == {("t1", "fast"), ("t2", "big")}
    assert out["price_map_version"] and "top tier" in out["counterfactual_method"]
    r = await asyncio.to_thread(CliRunner().invoke, app, ["ledger", "report", "--redis-url", redis_url])
    assert r.exit_code == 0 and "all tenants" in r.stdout and "Counterfactual" in r.stdout
    bad = await asyncio.to_thread(CliRunner().invoke, app, ["ledger", "report", "--by", "colour", "--redis-url", redis_url])
    assert bad.exit_code != 0


async def test_signed_savings_never_netted(acct):
    k, _ = await acct.keys.create("sv")
    p = await acct.authenticate(k)
    # fast saved against the top model; a "deliberate" request that cost 3x its counterfactual lost money
    await _serve(acct, p, "s1")
    adm = await acct.admit(p, "s2", [PlanEstimate(tier="deliberate", model="big", estimate_usd=0.05)])
    calls = [acct.upstream_call("big", Usage(prompt_tokens=100, completion_tokens=100)) for _ in range(3)]
    await acct.settle(adm, LedgerRecord(request_id="s2", key_id=p.key_id, tenant="sv", tier="deliberate",
                                        model="big", calls=calls, counterfactual_cost_usd=0.001,
                                        counterfactual_method="top-tier-plan:default"))
    rows = {r["tier"]: r for r in await reports.report(acct.redis, "sv", "1d", "tier")}
    assert rows["fast"]["savings_nusd"] > 0 and rows["deliberate"]["savings_nusd"] < 0
    assert rows["deliberate"]["counterfactual_estimated"] == 1
    tot = reports.totals(list(rows.values()))
    assert tot["savings_gained_usd"] > 0 > tot["savings_lost_usd"]
    assert tot["savings_nusd"] == rows["fast"]["savings_nusd"] + rows["deliberate"]["savings_nusd"]


async def test_hold_renewal_keeps_a_live_hold(acct):
    k, _info = await acct.keys.create("long")
    kid = _info.key_id
    p = await acct.authenticate(k)
    await acct.budgets.set(BudgetPolicy(scope=f"key:{kid}", limit_usd=1))
    acct._lease_ms = 1  # every hold is already expired by the next admit, unless renewed
    adm = await acct.admit(p, "L1", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.6)])
    acct._lease_ms = 3_600_000
    assert await acct.renew(adm)
    member = f"L1|{adm.reserved_nusd}"
    score = await acct.redis.zscore(rk.holds("long", f"key:{kid}"), member)
    # the renewed hold still blocks a second request that would overspend
    with pytest.raises(Exception, match="Budget exceeded"):
        await acct.admit(p, "L2", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.6)])
    assert score is not None
    await acct.release(adm)
    assert not await acct.renew(adm)  # nothing left to renew once settled/released


async def test_evaluation_rows_booked_apart_and_measured(acct):
    k, _info = await acct.keys.create("ev")
    kid = _info.key_id
    p = await acct.authenticate(k)
    await _serve(acct, p, "q1")
    for i, (served, shadow, cs, ss, esc, cx) in enumerate([
        ("fast", "deliberate", 0.9, 1.0, False, 0.1), ("fast", "deliberate", 0.2, 0.9, False, 0.6),
        ("deliberate", "fast", 0.3, 0.9, True, 0.9), ("fast", "deliberate", 1.0, 1.0, False, 0.2),
    ]):
        sc = [UpstreamCall(model="big" if shadow == "deliberate" else "fast", prompt_tokens=100,
                           completion_tokens=100, cost_usd=0.005 if shadow == "deliberate" else 0.0003)]
        rec = LedgerRecord(request_id=f"eval-{i}", key_id=kid, tenant="ev", tier=shadow, calls=sc,
                           evaluation={"of_request": f"q{i}", "served_tier": served, "shadow_tier": shadow,
                                       "top_tier": "deliberate", "served_cost_nusd": 300_000 if served == "fast"
                                       else 5_000_000, "shadow_cost_nusd": to_n(sc[0].cost_usd),
                                       "cheap_score": cs, "strong_score": ss, "escalated": esc,
                                       "complexity": cx, "bucket": f"{int(cx * 10) / 10:.1f}",
                                       "served_score": ss if esc else cs, "shadow_score": cs if esc else ss,
                                       "prompt": f"prompt {i}", "cheap_tier": "fast", "strong_tier": "deliberate"})
        assert await acct.record_evaluation(rec)
        assert not await acct.record_evaluation(rec)  # idempotent
    # evaluation spend is its own scope; the tenant's request spend is untouched by it
    assert int(await acct.redis.hget(rk.spend("ev", rk.scope_eval("ev")), "t")) == 3 * 5_000_000 + 300_000
    assert int(await acct.redis.hget(rk.spend("ev", rk.scope_tenant("ev")), "t")) == (
        (await reports.export_rows(acct.redis, "ev"))[0]["cost_nusd"])
    rows = await eval_rows(acct.redis, "ev")
    m = measured(rows)
    fast = next(t for t in m["by_tier"] if t["tier"] == "fast")
    assert fast["samples"] == 3 and fast["saving_per_request_usd"] == pytest.approx(0.0047)
    assert fast["saving_per_request_ci95_usd"] is None or fast["saving_per_request_ci95_usd"][0] <= 0.0047
    assert {(c["tier"], c["complexity"]) for c in m["by_tier_complexity"]} >= {("fast", "0.1"), ("deliberate", "0.6")}
    rq = m["routing"]
    assert rq["labelled"] == 4 and 0.0 <= rq["apgr"] <= 1.0
    # routed exactly as complexity would: the one escalation recovered 0.6 of the 0.7+0.6+0.1 gap... by hand:
    assert rq["pgr"] == pytest.approx(0.6 / (0.1 + 0.7 + 0.6 + 0.0))
    tr = training_rows(rows)
    assert [r["label"] for r in tr] == [0.0, 1.0, 1.0, 0.0] and tr[1]["prompt"] == "prompt 1"


def to_n(usd: float) -> int:
    return int(round(usd * NANO))


def test_apgr_of_a_perfect_and_a_useless_router():
    # perfect: the only rows where strong beats cheap are the most complex ones
    perfect = [(0.9, 0.0, 1.0, True), (0.8, 0.0, 1.0, True), (0.2, 1.0, 1.0, False), (0.1, 1.0, 1.0, False)]
    backwards = [(0.1, 0.0, 1.0, False), (0.2, 0.0, 1.0, False), (0.8, 1.0, 1.0, True), (0.9, 1.0, 1.0, True)]
    assert routing_quality(perfect)["apgr"] > 0.7 > routing_quality(backwards)["apgr"]
    assert routing_quality(perfect)["pgr"] == 1.0 and routing_quality(backwards)["pgr"] == 0.0
