"""The dashboard's JSON API: same numbers as the ledger and /v1/usage, and tenant isolation on the server."""

from __future__ import annotations

import httpx
import pytest

from tests.router.conftest import Proxy
from tests.router.observe_seed import Seeded, seed


@pytest.fixture()
def seeded(proxy: Proxy) -> Seeded:
    return seed(proxy)


def get(proxy: Proxy, path: str, key: str, **params: str) -> httpx.Response:
    with proxy.http() as c:
        return c.get(path, params=params, headers={"authorization": f"Bearer {key}"})


def test_overview_equals_usage_and_report(proxy: Proxy, seeded: Seeded) -> None:
    for key, tenant in ((seeded.acme_key, "acme"), (proxy.master_key, "acme")):
        ov = get(proxy, "/ui/api/overview", key, tenant=tenant, since="30d").json()
        usage = get(proxy, "/v1/usage", key, tenant=tenant, since="30d").json()
        assert ov["by_tier"] == usage["by_tier"]  # same rows, to the last digit
        assert ov["totals"] == usage["totals"]
        assert ov["spend_usd"] == usage["spend_usd"]
        rep = proxy.admin("GET", "/admin/ledger/report", params={"tenant": tenant, "since": "30d"}).json()
        assert ov["totals"] == rep["totals"]
    # the master's all-tenant view is the integer sum of both tenants
    both = get(proxy, "/ui/api/overview", proxy.master_key).json()
    assert both["totals"]["requests"] == len(seeded.acme_ids) + len(seeded.globex_ids) + 2  # + one stream each
    assert set(both["tenants"]) == {"acme", "globex"}
    assert both["refusals"] == {"total": 1, "by_reason": {"budget_exceeded": 1}}  # the seed's poor key, acme
    assert get(proxy, "/ui/api/overview", seeded.globex_key).json()["refusals"]["total"] == 0
    a = get(proxy, "/v1/usage", proxy.master_key, tenant="acme").json()["totals"]["cost_usd"]
    g = get(proxy, "/v1/usage", proxy.master_key, tenant="globex").json()["totals"]["cost_usd"]
    assert both["totals"]["cost_usd"] == pytest.approx(a + g, abs=1e-9)


def test_spend_series_sums_to_ledger(proxy: Proxy, seeded: Seeded) -> None:
    export = proxy.admin("GET", "/admin/ledger/export", params={"tenant": "acme"}).text
    import json

    rows = [json.loads(x) for x in export.splitlines() if x]
    rows = [r for r in rows if r["kind"] == "request"]  # refusals are ledgered too, at no cost
    ledger_total = sum(r["cost_usd"] for r in rows)
    for by in ("tier", "model", "tenant", "key"):
        s = get(proxy, "/ui/api/spend", seeded.acme_key, by=by, since="7d").json()
        assert s["total_requests"] == len(rows)
        assert s["total_cost_usd"] == pytest.approx(ledger_total, abs=1e-9)
        assert sum(x["total_requests"] for x in s["series"]) == len(rows)
    by_key = get(proxy, "/ui/api/spend", seeded.acme_key, by="key").json()
    assert {x["name"] for x in by_key["series"]} == {seeded.acme_key_id}
    assert get(proxy, "/ui/api/spend", seeded.acme_key, by="colour").status_code == 400


def test_tenant_key_sees_only_its_tenant(proxy: Proxy, seeded: Seeded) -> None:
    for path in ("/ui/api/overview", "/ui/api/spend", "/ui/api/budgets", "/ui/api/routing", "/ui/api/requests"):
        r = get(proxy, path, seeded.acme_key, tenant="globex")
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["type"] == "permission_error"
        mine = get(proxy, path, seeded.acme_key)
        assert mine.status_code == 200
        assert "globex" not in mine.text, path
    reqs = get(proxy, "/ui/api/requests", seeded.acme_key).json()["data"]
    assert {r["tenant"] for r in reqs} == {"acme"}
    assert {r["request_id"] for r in reqs} >= set(seeded.acme_ids)
    # another tenant's request id answers exactly like an unknown one
    other = get(proxy, f"/ui/api/requests/{seeded.globex_ids[0]}", seeded.acme_key)
    unknown = get(proxy, "/ui/api/requests/req_doesnotexist", seeded.acme_key)
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"]["code"] == unknown.json()["error"]["code"]
    budgets = get(proxy, "/ui/api/budgets", seeded.acme_key).json()["data"]
    acme_keys = {k["key_id"] for k in proxy.admin("GET", "/admin/keys", params={"tenant": "acme"}).json()["data"]}
    scopes = {b["scope"] for b in budgets}
    assert {"tenant:acme", f"key:{seeded.acme_key_id}"} <= scopes
    assert all(s.startswith("tenant:acme") or s.split(":")[1] in acme_keys for s in scopes), scopes
    sess = get(proxy, "/ui/api/session", seeded.acme_key).json()
    assert sess["role"] == "tenant" and sess["tenants"] == ["acme"]
    assert get(proxy, "/ui/api/session", "sk-nope").status_code == 401
    assert get(proxy, "/admin/keys", seeded.acme_key).status_code == 403  # the Keys page's API


def test_request_detail_has_decision_calls_and_feedback(proxy: Proxy, seeded: Seeded) -> None:
    rid = seeded.acme_ids[0]
    d = get(proxy, f"/ui/api/requests/{rid}", seeded.acme_key).json()
    assert d["request_id"] == rid and d["quality"] == pytest.approx(0.9)
    assert d["decision"]["candidates"] and d["calls"]
    assert d["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in d["calls"]), abs=1e-12)
    assert get(proxy, f"/ui/api/requests/{rid}", proxy.master_key, tenant="acme").json()["request_id"] == rid
    assert get(proxy, f"/ui/api/requests/{rid}", proxy.master_key).json()["request_id"] == rid
    assert get(proxy, f"/ui/api/requests/{rid}", proxy.master_key, tenant="globex").status_code == 404
    deliberate = get(proxy, f"/ui/api/requests/{seeded.acme_ids[4]}", seeded.acme_key).json()
    assert deliberate["tier"] == "deliberate" and len(deliberate["calls"]) >= 3
    # refusals are listed on request, never mixed into the requests
    ref = get(proxy, "/ui/api/requests", seeded.acme_key, kind="refusal").json()["data"]
    assert len(ref) == 1 and ref[0]["status"].startswith("refused") and ref[0]["cost_usd"] == 0
    assert all(r["kind"] == "request" for r in get(proxy, "/ui/api/requests", seeded.acme_key).json()["data"])
    assert get(proxy, "/ui/api/requests", seeded.globex_key, kind="refusal").json()["data"] == []
    # filters
    rows = get(proxy, "/ui/api/requests", proxy.master_key, tier="deliberate").json()["data"]
    assert rows and {r["tier"] for r in rows} == {"deliberate"}
    rows = get(proxy, "/ui/api/requests", proxy.master_key, key_id=seeded.globex_key_id).json()["data"]
    assert rows and {r["tenant"] for r in rows} == {"globex"}


def test_budgets_burn_down_and_routing(proxy: Proxy, seeded: Seeded) -> None:
    data = get(proxy, "/ui/api/budgets", proxy.master_key).json()["data"]
    shown = {b["scope"]: b for b in proxy.admin("GET", "/admin/budgets").json()["data"]}
    for b in data:
        assert b["spent_usd"] == shown[b["scope"]]["spent_usd"]
        assert b["cumulative_usd"][-1] == b["spent_usd"]
        assert b["window_spend_usd"] == b["spent_usd"]  # all seeded today: the rollups add up to the spend hash
        assert b["cumulative_usd"] == sorted(b["cumulative_usd"])
    acme = next(b for b in data if b["scope"] == "tenant:acme")
    assert acme["projection"]["period_end"] is not None
    rt = get(proxy, "/ui/api/routing", seeded.acme_key).json()
    assert sum(c["requests"] for c in rt["cells"]) == len(seeded.acme_ids) + 1
    assert {c["tier"] for c in rt["cells"]} >= {"fast", "reasoning", "deliberate"}
    assert rt["classifier"]["version"]
    rated = [c for c in rt["cells"] if c["rated"]]
    assert len(rated) == 1 and rated[0]["cost_per_quality_usd"] > 0


def test_ui_page_is_served(proxy: Proxy) -> None:
    with proxy.http() as c:
        r = c.get("/ui")
        assert r.status_code == 200 and "<title>Triage" in r.text
        assert "content-security-policy" in r.headers
        assert c.get("/ui/static/app.js").status_code == 200
        assert c.get("/ui/static/charts.js").status_code == 200
        assert c.get("/ui/api/overview").status_code == 401


def test_ui_can_be_switched_off(tmp_path, redis_url, mock_upstream) -> None:
    import yaml

    from tests.router.conftest import make_config, start_proxy

    cfg = make_config(mock_upstream.base_url, redis_url, observability={"ui": False, "metrics": {"enabled": False}})
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        for p in ("/ui", "/ui/api/session", "/metrics"):
            r = httpx.get(root + p, headers={"authorization": "Bearer sk-test-master-0123456789"})
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", p
    finally:
        server.should_exit = True
        thread.join(15)


def test_measured_savings_from_shadow_runs(proxy: Proxy, seeded: Seeded) -> None:
    """Shadow evaluations (recorded through the accountant) show as measured savings, per tenant only."""
    import asyncio

    from accounting import Accountant, LedgerRecord

    async def record() -> None:
        acct = await Accountant.connect(proxy.redis_url)
        try:
            for i, (served, shadow) in enumerate([(1_000_000, 9_000_000), (2_000_000, 10_000_000)]):
                await acct.record_evaluation(LedgerRecord(
                    request_id=f"eval_{i}", key_id=seeded.acme_key_id, tenant="acme", tier="deliberate", model="big",
                    evaluation={"served_tier": "fast", "shadow_tier": "deliberate", "bucket": "0.2",
                                "served_cost_nusd": served, "shadow_cost_nusd": shadow,
                                "served_score": 0.8, "shadow_score": 0.9}))
        finally:
            await acct.close()

    asyncio.run(record())
    m = get(proxy, "/ui/api/overview", seeded.acme_key).json()["savings"]["measured"]
    assert m["evaluations"] == 2
    fast = next(t for t in m["by_tier"] if t["tier"] == "fast")
    assert fast["samples"] == 2 and fast["savings_pct"] == pytest.approx(100 * (19 - 3) / 19)
    assert get(proxy, "/ui/api/routing", seeded.acme_key).json()["measured"]["evaluations"] == 2
    assert get(proxy, "/ui/api/overview", seeded.globex_key).json()["savings"]["measured"] is None
