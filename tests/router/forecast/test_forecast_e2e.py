"""The forecast against reality: traffic through the gateway, then the same prompts forced onto a tier."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis
from typer.testing import CliRunner

from accounting import reports
from router.cli import app
from tests.router.conftest import Proxy

PROMPTS = [
    "hi there", "What is the capital of France?", "Set a timer for ten minutes.", "Translate 'good night' to Spanish.",
    "Define photosynthesis in one sentence.", "What's 17 + 25?", "Tell me a joke about cats.",
    "Prove that there are infinitely many primes, step by step, and then prove that sqrt(2) is irrational.",
    "Design a distributed rate limiter for a multi-region API gateway: discuss consistency, failure modes, "
    "clock skew, and give pseudocode for the token bucket with Redis, then analyse its worst-case error.",
    "Solve: a train leaves at 3pm going 60 mph, another at 4pm going 80 mph on the same track. When does the "
    "second catch the first? Show every step and verify the answer.",
    "Write a Python function that parses ISO-8601 durations, with tests covering edge cases and invalid input, "
    "and explain its complexity.",
    "Compare the proofs of the fundamental theorem of algebra via Liouville's theorem and via topology, and "
    "explain which generalises better.",
]


def send(proxy: Proxy, key: str, model: str) -> None:
    c = proxy.client(api_key=key)
    for p in PROMPTS:
        c.chat.completions.create(model=model, messages=[{"role": "user", "content": p}])


def spent(proxy: Proxy, tenant: str) -> float:
    async def go() -> list[dict[str, Any]]:
        r = aioredis.Redis.from_url(proxy.redis_url)
        try:
            return await reports.export_rows(r, tenant, "1d")
        finally:
            await r.aclose()

    rows = asyncio.run(go())
    assert len(rows) == len(PROMPTS)
    return sum(r["cost_nusd"] for r in rows) / 1e9


def test_forecast_always_fast_and_top_match_forcing_those_tiers(proxy: Proxy) -> None:
    send(proxy, proxy.create_key("fc"), "triage/auto")
    res = CliRunner().invoke(app, ["forecast", "--config", str(proxy.config_path), "--tenant", "fc", "--since", "1d",
                                   "--json", "--qps", "5", "--sweep", "reasoning"])
    assert res.exit_code == 0, res.output
    out = orjson.loads(res.stdout)
    by = {p["policy"]: p for p in out["policies"]}
    assert set(by) == {"current", "always-fast", "always-top"}
    assert by["current"]["measured_share"] == 1.0
    real_auto = spent(proxy, "fc")
    assert abs(by["current"]["window_cost_usd"] - real_auto) < 1e-9 * len(PROMPTS)

    send(proxy, proxy.create_key("fc-fast"), "triage/fast")
    send(proxy, proxy.create_key("fc-top"), "triage/deliberate")
    real_fast, real_top = spent(proxy, "fc-fast"), spent(proxy, "fc-top")
    err_fast = by["always-fast"]["window_cost_usd"] / real_fast - 1
    err_top = by["always-top"]["window_cost_usd"] / real_top - 1
    print(f"forecast error: always-fast {err_fast:+.1%}, always-top {err_top:+.1%}")
    assert abs(err_fast) < 0.25 and abs(err_top) < 0.35
    assert by["always-top"]["cost_per_request_usd"] > by["always-fast"]["cost_per_request_usd"]
    sweep = out["sweep"]["rows"]
    assert sweep[0]["multiplier_vs_k1"] == 1.0 and sweep[-1]["multiplier_vs_k1"] > sweep[0]["multiplier_vs_k1"]


def test_forecast_prompts_file_and_bad_inputs(proxy: Proxy, tmp_path) -> None:
    send(proxy, proxy.create_key("fc2"), "triage/auto")
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(orjson.dumps({"prompt": p}).decode() for p in PROMPTS[:5]) + "\n")
    base = ["forecast", "--config", str(proxy.config_path), "--tenant", "fc2", "--since", "1d"]
    res = CliRunner().invoke(app, [*base, "--prompts", str(f), "--json"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["requests"] == 5
    res = CliRunner().invoke(app, [*base, "--policy", "x:force=nope"])
    assert res.exit_code == 2 and "not configured" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\n')
    res = CliRunner().invoke(app, [*base, "--prompts", str(bad)])
    assert res.exit_code == 2 and "needs `prompt`" in " ".join(res.output.split())  # rich wraps long paths
    res = CliRunner().invoke(app, [*base, "--plot", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
