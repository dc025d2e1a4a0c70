"""Shadow sampling through the proxy: a sampled request is answered again on the other tier in the
background, a judge scores both answers, and the ledger gets a labelled evaluation row booked as
evaluation spend; reports show measured savings with a confidence interval, quality per tier x bucket
and the routing's APGR; the labelled rows export for `triage train`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest
import redis as redis_sync
import typer
from typer.testing import CliRunner

from accounting import redis_keys as rk
from router.commands.accounting import register
from simulator.server import MockServer
from tests.router.conftest import Proxy
from tests.router.test_invoice_e2e import _config, _ledger, _start

SKILLS = {"mock-small": 0.4, "mock-small-b": 0.4, "mock-big": 0.97, "mock-reasoner": 0.8}


@pytest.fixture()
def sh(tmp_path: Path, redis_url: str, mock_upstream: MockServer) -> Iterator[Proxy]:
    mock_upstream.update_settings(difficulty=True, model_skill=SKILLS)
    cfg = _config(mock_upstream, redis_url, shadow={
        "judge_model": "big", "tenants": {"sh": {"rate": 1.0, "budget_usd": 5.0},
                                          "poor": {"rate": 1.0, "budget_usd": 0.000001}}})
    yield from _start(tmp_path, cfg, mock_upstream, redis_url)


def _evals(p: Proxy, tenant: str) -> list[dict[str, Any]]:
    r = redis_sync.Redis.from_url(p.redis_url)
    return [json.loads(f[b"d"]) for _, f in r.xrange(rk.evals(tenant))]


def _wait_evals(p: Proxy, tenant: str, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while len(_evals(p, tenant)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return _evals(p, tenant)


def test_shadow_rows_label_measure_and_export(sh: Proxy) -> None:
    key = sh.create_key("sh")
    assert sh.admin("PUT", "/admin/tenants/sh", json={"store_prompts": True}).status_code == 200
    c = sh.client(key, timeout=60)
    questions = [f"Question {i}: compute the value of item {i * 7}." for i in range(12)]
    served = {}
    for i, q in enumerate(questions):
        tier = "triage/deliberate" if i % 3 == 0 else "triage/fast"
        r = c.chat.completions.with_raw_response.create(model=tier, max_tokens=32,
                                                        messages=[{"role": "user", "content": q}])
        served[r.headers["x-request-id"]] = (q, tier.split("/")[1], int(r.headers["x-triage-cost-nusd"]))
    rows = _wait_evals(sh, "sh", len(questions))
    assert len(rows) == len(questions)
    truth = {q: {m: sh.mock._call("POST", "/_mock/truth", {"model": m, "question": q})["correct"]
                 for m in ("mock-small", "mock-big")} for q in questions}
    for row in rows:
        ev = row["evaluation"]
        q, tier, cost = served[ev["of_request"]]
        assert row["kind"] == "evaluation" and ev["served_tier"] == tier and ev["served_cost_nusd"] == cost
        assert ev["shadow_tier"] == ("fast" if tier == "deliberate" else "deliberate")
        assert ev["escalated"] == (tier == "deliberate")
        assert row["cost_nusd"] == sum(x["cost_nusd"] for x in row["calls"]) > ev["shadow_cost_nusd"] > 0
        # the judge (a strong verifier) scores the cheap answer by whether the cheap model was right
        assert ev["cheap_score"] == (1.0 if truth[q]["mock-small"] else 0.0), (q, ev)
        assert ev["strong_score"] == (1.0 if truth[q]["mock-big"] else 0.0), (q, ev)
        assert ev["prompt"] == q
    # evaluation spend is apart from the tenant's request spend
    rd = redis_sync.Redis.from_url(sh.redis_url)
    requests = [r for r in _ledger(sh, "sh") if r["kind"] == "request"]
    assert int(rd.hget(rk.spend("sh", rk.scope_tenant("sh")), "t")) == sum(r["cost_nusd"] for r in requests)
    assert int(rd.hget(rk.spend("sh", rk.scope_eval("sh")), "t")) == sum(r["cost_nusd"] for r in rows)
    # and /metrics counts the same runs and spend
    from tests.router.test_observe_metrics import parse, total  # noqa: PLC0415

    prom = parse(httpx.get(f"{sh.root_url}/metrics").text)
    assert total(prom, "triage_shadow_runs_total") == len(rows)
    assert total(prom, "triage_shadow_runs_total", served_tier="fast", shadow_tier="deliberate") == 8
    assert total(prom, "triage_shadow_cost_usd_total") == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-9)
    rep = sh.admin("GET", "/admin/ledger/report", params={"tenant": "sh", "since": "1d", "by": "tier"}).json()
    m = rep["measured"]
    fast = next(t for t in m["by_tier"] if t["tier"] == "fast")
    assert fast["samples"] == 8 and fast["saving_per_request_usd"] > 0
    lo, hi = fast["saving_per_request_ci95_usd"]
    assert lo <= fast["saving_per_request_usd"] <= hi
    cells = {(x["tier"], x["complexity"]) for x in m["by_tier_complexity"]}
    assert {t for t, _ in cells} == {"fast", "deliberate"}
    assert all(x["quality"] is not None for x in m["by_tier_complexity"])
    routing = m["routing"]
    print(f"shadow: measured fast saving/request {fast['saving_per_request_usd']:.6f} USD, 95% CI {lo:.6f}..{hi:.6f}, "
          f"{fast['savings_pct']:.1f}% vs top tier; estimated {[(r['tier'], r['savings_pct']) for r in rep['rows']]}; routing {routing}")
    assert routing["labelled"] == 12 and routing["strong_share"] == pytest.approx(4 / 12)
    assert routing["apgr"] is None or 0.0 <= routing["apgr"] <= 1.0
    # the labelled rows, ready for `triage train`
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    out = CliRunner().invoke(app, ["ledger", "labelled", "--tenant", "sh", "--redis-url", sh.redis_url])
    assert out.exit_code == 0, out.output
    lab = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert len(lab) == 12 and all(x["prompt"] in questions for x in lab)
    for x in lab:
        assert x["label"] == (1.0 if (truth[x["prompt"]]["mock-big"] and not truth[x["prompt"]]["mock-small"]) else 0.0)
    from classifier.training.data import load  # noqa: PLC0415 - the trainer's own reader takes them

    p = Path(sh.config_path.parent / "labelled.jsonl")
    p.write_bytes(out.stdout_bytes)
    examples, _ = load([p])
    assert len(examples) == 12 and {e.y for e in examples} <= {0.0, 1.0}


def test_shadow_off_by_default_and_within_its_budget(sh: Proxy) -> None:
    for tenant in ("other", "poor"):  # no shadow config / a budget too small for one shadow run
        key = sh.create_key(tenant)
        sh.client(key).chat.completions.create(model="triage/fast", max_tokens=16,
                                               messages=[{"role": "user", "content": "Question: 2+2?"}])
    key = sh.create_key("sh")  # a sampled tenant in the same proxy: its row shows the task ran
    sh.client(key).chat.completions.create(model="triage/fast", max_tokens=16,
                                           messages=[{"role": "user", "content": "Question: 3+3?"}])
    assert len(_wait_evals(sh, "sh", 1)) == 1
    assert _evals(sh, "other") == [] and _evals(sh, "poor") == []
