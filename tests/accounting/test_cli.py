"""`triage keys|budgets|ledger` against the real test Redis (the same store the proxy uses)."""

from __future__ import annotations

import asyncio
import csv
import io

import orjson
import typer
from typer.testing import CliRunner

from accounting import Accountant, AccountingSettings, LedgerRecord, PlanEstimate
from router.commands.accounting import register, resolve_redis_url


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app


def test_cli_keys_budgets_ledger(redis_url, prices, tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    app, run = _app(), CliRunner().invoke
    r = run(app, ["keys", "create", "--tenant", "acme", "--budget-usd", "1", "--period", "day", "--json",
                  "--redis-url", redis_url])
    assert r.exit_code == 0, r.output
    created = orjson.loads(r.stdout)
    key, kid = created["key"], created["key_id"]
    # found through the running proxy's state dir, like `triage keys` next to `triage serve`
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "redis.url").write_text(redis_url)
    monkeypatch.setenv("TRIAGE_STATE_DIR", str(tmp_path / "state"))
    assert resolve_redis_url(None) == redis_url
    r = run(app, ["keys", "list", "--json"])
    assert r.exit_code == 0 and orjson.loads(r.stdout)[0]["key_id"] == kid and key not in r.stdout
    r = run(app, ["budgets", "set", "--tenant", "acme", "--tier", "deliberate", "--limit-usd", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["scope"] == "tenant:acme:tier:deliberate"
    r = run(app, ["budgets", "show", "--json"])
    assert {b["scope"] for b in orjson.loads(r.stdout)} == {f"key:{kid}", "tenant:acme:tier:deliberate"}
    assert run(app, ["budgets", "show"]).exit_code == 0  # rich table renders

    async def serve() -> None:
        acct = await Accountant.connect(redis_url, AccountingSettings(spool_dir=str(tmp_path / "sp"),
                                                                      counterfactual_model="big"), prices)
        p = await acct.authenticate(key)
        for i in range(3):
            adm = await acct.admit(p, f"c{i}", [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)])
            call = acct.upstream_call("fast", __import__("accounting").Usage(prompt_tokens=100, completion_tokens=50))
            await acct.settle(adm, LedgerRecord(request_id=f"c{i}", key_id=p.key_id, tenant=p.tenant,
                                                complexity=0.1, calls=[call]))
        await acct.close()

    asyncio.run(serve())
    r = run(app, ["ledger", "report", "--tenant", "acme", "--since", "7d", "--by", "tier", "--json"])
    assert r.exit_code == 0, r.output
    rep = orjson.loads(r.stdout)
    assert rep["totals"]["requests"] == 3 and abs(rep["totals"]["cost_usd"] - 3 * 200e-6) < 1e-12
    assert run(app, ["ledger", "report", "--tenant", "acme", "--by", "model"]).exit_code == 0
    r = run(app, ["ledger", "export", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3 and rows[0]["tenant"] == "acme" and rows[0]["prompt"] == ""
    out = tmp_path / "x.parquet"
    assert run(app, ["ledger", "export", "--format", "parquet", "--out", str(out)]).exit_code == 0
    assert out.stat().st_size > 0
    r = run(app, ["keys", "revoke", kid])
    assert r.exit_code == 0
    assert run(app, ["keys", "revoke", "k_missing"]).exit_code == 1


def test_cli_without_redis_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("TRIAGE_STATE_DIR", str(tmp_path / "nothing"))
    r = CliRunner().invoke(_app(), ["keys", "list"])
    assert r.exit_code == 2 and "REDIS_URL" in r.output
