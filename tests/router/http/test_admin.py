"""Admin API, /v1/usage and /v1/feedback over HTTP (ASGI), against the real test Redis."""

from __future__ import annotations

import csv
import io

import httpx
import orjson
import pytest
from fastapi import FastAPI

from accounting import Accountant, AccountingSettings, LedgerRecord, PlanEstimate, PriceBook, PriceSpec, Usage
from accounting import redis_keys as rk
from accounting.ids import new_request_id
from router.http.admin import admin_router
from router.http.errors import ProxyError

MASTER = "sk-admin-test-master"
PRICES = [PriceSpec(name="small", model_info={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}),
          PriceSpec(name="big", model_info={"input_cost_per_token": 10e-6, "output_cost_per_token": 20e-6})]


@pytest.fixture()
async def env(redis_url, tmp_path):
    acct = await Accountant.connect(
        redis_url, AccountingSettings(spool_dir=str(tmp_path / "spool"), counterfactual_model="big"),
        PriceBook.build(PRICES))
    app = FastAPI()
    app.state.accountant = acct
    app.state.master_key = MASTER

    @app.exception_handler(ProxyError)
    async def _h(request, exc: ProxyError):
        return exc.response()

    app.include_router(admin_router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, acct
    await acct.close()


def H(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _serve(acct: Accountant, key: str, rid: str, tier: str = "fast", model: str = "small",
                 complexity: float = 0.2, prompt: str | None = None) -> None:
    p = await acct.authenticate(key)
    adm = await acct.admit(p, rid, [PlanEstimate(tier=tier, model=model, estimate_usd=0.05)])
    call = acct.upstream_call(model, Usage(prompt_tokens=1000, completion_tokens=500))
    await acct.settle(adm, LedgerRecord(request_id=rid, key_id=p.key_id, tenant=p.tenant, tier=tier, model=model,
                                        complexity=complexity, calls=[call], prompt=prompt))


async def test_admin_requires_master(env):
    c, _ = env
    assert (await c.get("/admin/keys")).status_code == 401
    r = await c.get("/admin/keys", headers=H("sk-wrong"))
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


async def test_keys_budgets_lifecycle(env):
    c, acct = env
    r = await c.post("/admin/keys", headers=H(MASTER), json={"tenant": "acme", "label": "ci", "budget_usd": 2,
                                                               "period": "day", "max_cost_per_query": 0.5})
    assert r.status_code == 201, r.text
    key, kid = r.json()["key"], r.json()["key_id"]
    assert key.startswith("sk-triage-")
    listed = (await c.get("/admin/keys", headers=H(MASTER))).json()["data"]
    assert [k["key_id"] for k in listed] == [kid] and "key" not in listed[0]
    raw = await acct.redis.keys("*")
    assert not any(key.encode() in k for k in raw)  # only the hash is stored
    p = await acct.authenticate(key)
    assert p.max_cost_per_query == 0.5
    r = await c.put("/admin/budgets", headers=H(MASTER),
                    json={"tenant": "acme", "tier": "deliberate", "limit_usd": 1.5, "period": "month"})
    assert r.status_code == 200 and r.json()["scope"] == "tenant:acme:tier:deliberate"
    shown = (await c.get("/admin/budgets", headers=H(MASTER))).json()["data"]
    assert {b["scope"] for b in shown} == {f"key:{kid}", "tenant:acme:tier:deliberate"}
    bad = await c.put("/admin/budgets", headers=H(MASTER), json={"scope": "nonsense", "limit_usd": 1})
    assert bad.status_code == 400
    assert (await c.delete(f"/admin/keys/{kid}", headers=H(MASTER))).status_code == 200
    assert await acct.authenticate(key) is None
    assert (await c.delete("/admin/keys/k_0123456789abcdef", headers=H(MASTER))).status_code == 404
    assert (await c.delete("/admin/keys/k_nope", headers=H(MASTER))).status_code == 400  # not a key id at all


async def test_tenant_isolation_usage_and_feedback(env):
    c, acct = env
    ka, _ = await acct.keys.create("alpha")
    kb, _ = await acct.keys.create("beta")
    ra, rb = new_request_id(), new_request_id()
    await _serve(acct, ka, ra)
    await _serve(acct, kb, rb)
    # beta cannot rate alpha's request, and cannot tell it exists
    r = await c.post("/v1/feedback", headers=H(kb), json={"request_id": ra, "score": 0.0})
    assert r.status_code == 404
    r = await c.post("/v1/feedback", headers=H(ka), json={"request_id": ra, "thumbs": "up", "comment": "great"})
    assert r.status_code == 200
    assert (await c.post("/feedback", headers=H(kb), json={"request_id": rb, "score": 0.5})).status_code == 200
    assert (await c.post("/v1/feedback", headers=H(kb), json={"request_id": rb, "score": 2})).status_code == 400
    ua = (await c.get("/v1/usage", headers=H(ka))).json()
    ub = (await c.get("/usage", headers=H(kb))).json()
    assert ua["tenant"] == "alpha" and ub["tenant"] == "beta"
    assert ua["totals"]["requests"] == 1
    assert ua["by_tier"][0]["quality"] == 1.0 and ub["by_tier"][0]["quality"] == 0.5
    # a client key cannot pick another tenant
    ux = (await c.get("/v1/usage?tenant=beta", headers=H(ka))).json()
    assert ux["tenant"] == "alpha"
    assert (await c.get("/admin/ledger/report?tenant=beta", headers=H(ka))).status_code == 403
    assert (await c.get("/v1/usage")).status_code == 401


async def test_report_and_export(env):
    c, acct = env
    k, _ = await acct.keys.create("rep")
    await acct.keys.set_tenant("rep", store_prompts=True)
    acct.invalidate_auth_cache()
    q1, q2 = new_request_id(), new_request_id()
    await _serve(acct, k, q1, prompt="what is 2+2")
    await _serve(acct, k, q2, tier="deliberate", model="big", complexity=0.9)
    await acct.feedback("rep", q1, 0.5)
    await acct.feedback("rep", q1, 1.0)  # re-rating replaces
    rep = (await c.get("/admin/ledger/report?tenant=rep&by=tier", headers=H(MASTER))).json()
    rows = {r["tier"]: r for r in rep["rows"]}
    assert rows["fast"]["requests"] == 1 and rows["fast"]["quality"] == 1.0 and rows["fast"]["rated"] == 1
    assert rows["fast"]["cost_usd"] == pytest.approx(0.002)
    assert rows["fast"]["cost_per_quality_usd"] == pytest.approx(0.002)
    assert rows["fast"]["counterfactual_usd"] == pytest.approx(0.02)
    assert rows["deliberate"]["savings_usd"] == pytest.approx(0.0)
    assert rep["totals"]["savings_usd"] == pytest.approx(0.018)
    by_cx = (await c.get("/admin/ledger/report?tenant=rep&by=complexity", headers=H(MASTER))).json()["rows"]
    assert {r["complexity"] for r in by_cx} == {"0.2", "0.9"}
    r = await c.get("/admin/ledger/export?tenant=rep&format=jsonl", headers=H(MASTER))
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    assert {x["request_id"] for x in lines} == {q1, q2}
    for x in lines:
        for col in ("request_id", "tenant", "tier", "model", "complexity", "prompt", "quality", "cost_usd"):
            assert col in x
    q1 = next(x for x in lines if x["request_id"] == q1)
    assert q1["prompt"] == "what is 2+2" and q1["quality"] == 1.0
    r = await c.get("/admin/ledger/export?format=csv", headers=H(MASTER))
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 2
    r = await c.get("/admin/ledger/export?format=parquet", headers=H(MASTER))
    import pyarrow.parquet as pq

    t = pq.read_table(io.BytesIO(r.content))
    assert t.num_rows == 2 and "quality" in t.column_names


async def test_prompt_dropped_without_opt_in(env):
    c, acct = env
    k, _ = await acct.keys.create("private")
    await _serve(acct, k, "p1", prompt="secret text")
    r = await c.get("/admin/ledger/export?tenant=private", headers=H(MASTER))
    assert orjson.loads(r.content.splitlines()[0])["prompt"] is None
    raw = b"".join(f[b"d"] for _, f in await acct.redis.xrange(rk.ledger("private")))
    assert b"secret text" not in raw
