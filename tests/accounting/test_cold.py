"""The cold ledger: compaction to Parquet, reports/exports over hot + cold, crash safety."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from accounting import redis_keys as rk
from accounting import reports
from accounting.cold import ColdLedger, ColdUnavailable, compact_all
from accounting.ids import new_request_id
from accounting.models import LedgerRecord, PlanEstimate, UpstreamCall

TENANTS = ("acme", "globex")
TIERS = (("fast", "fast"), ("reasoning", "big"), ("deliberate", "big"))


class Crash(Exception):
    pass


async def _seed(acct, n: int = 36) -> list[str]:
    """n requests per tenant over the last 4 days, mixed tiers/models/complexity; a third rated."""
    now = time.time()
    rids = []
    for t in TENANTS:
        plain, _ = await acct.keys.create(t)
        p = await acct.authenticate(plain)
        for i in range(n):
            tier, model = TIERS[i % 3]
            rid = new_request_id()
            adm = await acct.admit(p, rid, [PlanEstimate(tier=tier, model=model, estimate_usd=0.5)])
            rec = LedgerRecord(
                request_id=rid, key_id=p.key_id, tenant=t, tier=tier, model=model, ts=now - (i % 4) * 86400 - i,
                complexity=(i % 10) / 10, calls=[UpstreamCall(model=model, prompt_tokens=100 + i, completion_tokens=20 + i,
                                                             cached_tokens=i % 7, cost_usd=0.0001 * (i + 1))])
            assert await acct.settle(adm, rec)
            if i % 3 == 0:
                assert await acct.feedback(p, rid, score=(i % 5) / 4)
            rids.append(rid)
            if i % 5 == 2:  # refusals are ledgered too, and counted in the rollups
                await acct.refuse(LedgerRecord(request_id=new_request_id(), key_id=p.key_id, tenant=t, tier=tier,
                                               model=model, ts=now - (i % 4) * 86400), 777_000 + i)
    return rids


async def _views(acct, cold=None) -> dict:
    out = {}
    for t in TENANTS:
        for by in ("tier", "model", "day", "complexity"):
            out[t, by] = await reports.report(acct.redis, t, "7d", by, cold=cold)
    rows = await reports.export_rows(acct.redis, cold=cold)
    out["export"] = sorted(rows, key=lambda r: r["request_id"])
    out["export_since"] = sorted((r["request_id"] for r in await reports.export_rows(acct.redis, since="1d", cold=cold)))
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


async def test_compaction_keeps_reports_and_exports(acct, tmp_path):
    await _seed(acct)
    before = await _views(acct)
    assert len(before["export"]) == 72 + 2 * 7
    cold = ColdLedger(str(tmp_path / "cold"))
    # everything settled up to now counts as old: cutoff is "now + 1 day - 1 day"
    for t in TENANTS:
        r = await cold.compact_tenant(acct.redis, t, older_than_days=1, batch=10, now=time.time() + 86400)
        assert r.rows == 43 and r.batches == 5
        assert await acct.redis.xlen(rk.ledger(t)) == 0
    files = _files(tmp_path / "cold")
    assert files and all("tenant=" in str(f) and "day=" in str(f) for f in files)
    after = await _views(acct, cold)
    assert after == before
    # the rollup hashes expire with retention; the cold ledger then answers for those days
    for k in [k async for k in acct.redis.scan_iter(match="triage:{*}:rollup:*")]:
        await acct.redis.delete(k)
    assert await _views(acct, cold) == before
    # new traffic after compaction: reports and exports read both sides
    await _seed(acct, n=6)
    both = await reports.export_rows(acct.redis, cold=cold)
    assert len(both) == 86 + 14 and len({r["request_id"] for r in both}) == 100
    # re-running has nothing to do and writes nothing
    assert sum(r.rows for r in await compact_all(acct.redis, cold, older_than_days=1)) == 0
    assert _files(tmp_path / "cold") == files


async def test_feedback_after_compaction_shows_in_exports(acct, tmp_path):
    rids = await _seed(acct, n=3)
    cold = ColdLedger(str(tmp_path / "cold"))
    await cold.compact_tenant(acct.redis, "acme", 1, now=time.time() + 86400)
    p = await acct.authenticate((await acct.keys.create("acme"))[0])
    assert await acct.feedback(p, rids[1], score=0.25)
    rows = {r["request_id"]: r for r in await reports.export_rows(acct.redis, "acme", cold=cold)}
    assert rows[rids[1]]["quality"] == 0.25


@pytest.mark.parametrize("step", ["pending", "file", "files", "commit"])
async def test_crash_at_each_step_loses_and_doubles_nothing(acct, tmp_path, step):
    await _seed(acct, n=12)
    before = await _views(acct)
    calls = {"n": 0}

    def crash(at: str) -> None:
        if at == step:
            calls["n"] += 1
            if calls["n"] == 2 or step != "file" and calls["n"] == 1:  # "file": after the first file of a batch
                raise Crash(at)

    root = str(tmp_path / "cold")
    with pytest.raises(Crash):
        await ColdLedger(root, hooks=crash).compact_tenant(acct.redis, "acme", 1, batch=8, now=time.time() + 86400)
    # between the crash and the re-run, readers see every row exactly once
    mid = await _views(acct, ColdLedger(root))
    assert mid == before
    cold = ColdLedger(root)
    res = await cold.compact_tenant(acct.redis, "acme", 1, batch=8, now=time.time() + 86400)
    moved = res.rows + (8 if step == "commit" else 0)  # a crash after commit had already moved its batch
    assert moved == 14
    assert await acct.redis.xlen(rk.ledger("acme")) == 0
    assert await acct.redis.hget(rk.ledger_cold("acme"), "pending") is None
    assert int(await acct.redis.hget(rk.ledger_cold("acme"), "rows")) == 14
    assert await _views(acct, cold) == before
    assert not list(Path(root).rglob("*.tmp-*"))


def test_missing_extra_is_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ColdUnavailable, match=r"triage-gateway\[cold\]"):
        ColdLedger(str(tmp_path))


def test_cli_compact_then_report_and_export(redis_url, settings, prices, tmp_path, monkeypatch):
    import asyncio

    import redis as redis_sync
    from typer.testing import CliRunner

    from accounting import Accountant
    from tests.accounting.test_cli import _app

    async def seed() -> None:
        a = await Accountant.connect(redis_url, settings, prices)
        await _seed(a, n=4)
        await a.close()

    monkeypatch.delenv("REDIS_URL", raising=False)
    asyncio.run(seed())
    run = CliRunner().invoke
    app = _app()
    base = ["--redis-url", redis_url, "--cold", str(tmp_path / "cold")]
    rep0 = run(app, ["ledger", "report", "--tenant", "acme", "--json", *base])
    exp0 = run(app, ["ledger", "export", "--format", "jsonl", *base])
    r = run(app, ["ledger", "compact", "--older-than-days", "0", "--json", *base])
    assert r.exit_code == 0, r.output
    assert '"rows": 5' in r.stdout
    with redis_sync.Redis.from_url(redis_url) as r_:
        assert r_.xlen(rk.ledger("acme")) == 0
    assert run(app, ["ledger", "report", "--tenant", "acme", "--json", *base]).stdout == rep0.stdout
    assert sorted(run(app, ["ledger", "export", "--format", "jsonl", *base]).stdout.splitlines()) == \
        sorted(exp0.stdout.splitlines())
    nocold = run(app, ["ledger", "compact", "--redis-url", redis_url])
    assert nocold.exit_code == 2 and "No cold ledger" in nocold.output


async def test_object_store_path(acct):
    """A non-local fsspec filesystem (fsspec's in-memory one standing in for S3): objects written
    whole, read back by DuckDB through the registered filesystem."""
    import uuid

    await _seed(acct, n=8)
    before = await _views(acct)
    cold = ColdLedger(f"memory://triage-{uuid.uuid4().hex}")
    assert not cold.local
    r = await cold.compact_tenant(acct.redis, "acme", 1, batch=4, now=time.time() + 86400)
    r2 = await cold.compact_tenant(acct.redis, "globex", 1, batch=4, now=time.time() + 86400)
    assert r.rows == r2.rows == 10
    assert cold.fs.glob(f"{cold.root}/tenant=acme/day=*/*.parquet")
    for k in [k async for k in acct.redis.scan_iter(match="triage:{*}:rollup:*")]:
        await acct.redis.delete(k)
    assert await _views(acct, cold) == before


async def test_export_while_a_compaction_commits(acct, tmp_path):
    """A batch committed after the export read the stream but before it read the cold side: the
    export still has every row once (stream copies at/below the watermark are dropped)."""
    await _seed(acct, n=8)
    before = sorted(r["request_id"] for r in await reports.export_rows(acct.redis, "acme"))
    root = str(tmp_path / "cold")
    reader = ColdLedger(root)
    real = reader.watermark

    async def commit_then_read(redis, tenant):
        await ColdLedger(root).compact_tenant(redis, tenant, 1, batch=3, now=time.time() + 86400)
        return await real(redis, tenant)

    reader.watermark = commit_then_read  # type: ignore[method-assign]
    rows = await reports.export_rows(acct.redis, "acme", cold=reader)
    assert await acct.redis.xlen(rk.ledger("acme")) == 0  # it did move everything mid-export
    assert sorted(r["request_id"] for r in rows) == before
