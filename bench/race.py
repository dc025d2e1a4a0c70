"""Budget race: 4 Triage workers on one Redis, 500 concurrent requests against one $1.00 budget.

Every request costs exactly $0.01 (see configs/race.yaml), so a correct proxy
admits exactly 100, refuses 400 with budget_exceeded, and the ledger shows $1.00.
A refusal is false when the budget still had room for it once everything
settled: false = min(refused, floor((limit - spent) / 0.01)).
"""

from __future__ import annotations

import math
import time
from typing import Any

from procs import http, start_triage
from sections import loadgen, mock_settings

LIMIT, COST, N = 1.00, 0.01, 500
TRIALS = [{"latency_ms": 0, "stream": False}, {"latency_ms": 50, "stream": False},
          {"latency_ms": 50, "stream": True}]


def run(ctx: Any) -> dict[str, Any]:
    proc = start_triage("triage-race", "race.yaml", 4, ctx.logdir, ctx.env)
    try:
        proc.wait_ready(180)
        time.sleep(2)  # all four workers up, not just the first to bind
        workers = len(proc.workers())
        trials = []
        for i, t in enumerate(TRIALS):
            trials.append(_trial(ctx, proc, i, t))
            ctx.log(f"  race {t}: admitted {trials[-1]['admitted']} refused {trials[-1]['refused_budget']} "
                    f"spent ${trials[-1]['spent_usd']:.4f} overspend ${trials[-1]['overspend_usd']:.4f} "
                    f"false refusals {trials[-1]['false_refusals']}")
        return {"workers": workers, "limit_usd": LIMIT, "cost_per_request_usd": COST, "concurrent": N,
                "trials": trials,
                "overspend_usd_max": max(t["overspend_usd"] for t in trials),
                "false_refusals_total": sum(t["false_refusals"] for t in trials)}
    finally:
        mock_settings(ctx, latency_ms=0, completion_tokens=16)
        proc.stop()


def _trial(ctx: Any, proc: Any, i: int, t: dict[str, Any]) -> dict[str, Any]:
    master = ctx.env["BENCH_MASTER_KEY"]
    tenant = f"race-{ctx.run_id}-{i}"
    st, key = http("POST", proc.url + "/admin/keys", {"tenant": tenant, "budget_usd": LIMIT, "period": "total"}, master)
    if st not in (200, 201):
        raise RuntimeError(f"creating the race key: {st} {key}")
    mock_settings(ctx, latency_ms=t["latency_ms"], completion_tokens=20)
    body: dict[str, Any] = {"model": "race", "max_tokens": 20,
                            "messages": [{"role": "user", "content": "Count to ten."}]}
    if t["stream"]:
        body.update(stream=True, stream_options={"include_usage": True})
    r = loadgen({"mode": "burst", "n": N, "timeout": 60,
                 "target": {"port": proc.port, "path": "/v1/chat/completions",
                            "headers": {"authorization": f"Bearer {key['key']}"}, "body": body}})
    scope = f"key:{key['key_id']}" if "key_id" in key else None
    budget: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # settling runs after the response; wait for holds to clear
        st, b = http("GET", proc.url + "/admin/budgets" + (f"?scope={scope}" if scope else ""), key=master)
        rows = [x for x in (b.get("data") or []) if scope is None or x.get("scope") == scope] if st == 200 else []
        budget = rows[0] if rows else {}
        if budget and budget.get("reserved_usd", 1) == 0:
            break
        time.sleep(0.5)
    st, rep = http("GET", proc.url + f"/admin/ledger/report?tenant={tenant}&since=1d&by=model", key=master)
    ledger = rep.get("totals", {}) if st == 200 else {}
    admitted = r["status"].get("200", 0)
    refused = r["error_codes"].get("budget_exceeded", 0)
    spent = budget.get("spent_usd", ledger.get("cost_usd", 0.0))
    room = max(0.0, LIMIT - spent)
    return {**t, "admitted": admitted, "refused_budget": refused, "other_errors": r["errors"] - refused,
            "status": r["status"], "error_codes": r["error_codes"], "elapsed_s": r["elapsed_s"],
            "spent_usd": spent, "reserved_after_usd": budget.get("reserved_usd"),
            "ledger_requests": ledger.get("requests"), "ledger_cost_usd": ledger.get("cost_usd"),
            "overspend_usd": round(max(0.0, spent - LIMIT), 9),
            "false_refusals": min(refused, math.floor(room / COST + 1e-6))}
