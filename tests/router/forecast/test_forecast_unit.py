"""The forecast against figures computed by hand on a small synthetic ledger (self-hosted model included)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from router.config import ConfigError, TriageConfig
from router.forecast import forecast
from router.forecast import policies as pol
from router.forecast.engine import SECONDS_MONTH, SECONDS_YEAR
from router.forecast.profiles import rows_from_export
from router.forecast.sweep import sweep_reasoning
from router.runtime import price_book
from router.tiers.reasoning import STEP_TOKENS, THINK_STEPS

SMALL = (1e-6, 2e-6)
BIG = (1e-5, 3e-5)
# self-hosted: 2 GPUs at $3.60/h, 1,000 decode tok/s, 10,000 prefill tok/s, busy half the time
GPU_IN = 3.6 * 2 / 3600 / (10_000 * 0.5)   # 4e-7
GPU_OUT = 3.6 * 2 / 3600 / (1_000 * 0.5)   # 4e-6


def _entry(name: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": "http://127.0.0.1:9/v1",
                                                   "api_key": "x"}, "model_info": info}


def config() -> TriageConfig:
    return TriageConfig.from_mapping({
        "model_list": [
            _entry("small", {"input_cost_per_token": SMALL[0], "output_cost_per_token": SMALL[1]}),
            _entry("big", {"input_cost_per_token": BIG[0], "output_cost_per_token": BIG[1]}),
            _entry("gpu", {"gpu_hour_usd": 3.6, "gpu_count": 2, "decode_tokens_per_s": 1000,
                           "prefill_tokens_per_s": 10_000, "utilization": 0.5}),
        ],
        "tiers": {"fast": {"models": ["small"]}, "reasoning": {"models": ["gpu"]},
                  "deliberate": {"models": ["big"], "strategy": "vote"}},
        "policy": {"reasoning_threshold": 0.5, "deliberate_threshold": 0.8},
    }, "test")


def fast_row(i: int, q: float | None = None) -> dict[str, Any]:
    return {"request_id": f"f{i}", "kind": "request", "status": "ok", "tier": "fast", "complexity": 0.1,
            "cost_usd": 100 * SMALL[0] + 50 * SMALL[1], "quality": q, "ts": 1000.0 + 10 * i, "latency_ms": 500,
            "calls": [{"model": "small", "prompt_tokens": 100, "completion_tokens": 50}]}


def delib_row(i: int, q: float | None = None) -> dict[str, Any]:
    calls = [{"model": "big", "prompt_tokens": 200, "completion_tokens": 40}] * 3
    calls += [{"model": "big", "prompt_tokens": 400, "completion_tokens": 10}]
    return {"request_id": f"d{i}", "kind": "request", "status": "ok", "tier": "deliberate", "complexity": 0.9,
            "cost_usd": 1000 * BIG[0] + 130 * BIG[1], "quality": q, "ts": 1040.0 + 5 * i, "latency_ms": 2000,
            "calls": calls}


LEDGER = [fast_row(0, 1.0), fast_row(1, 1.0), fast_row(2), fast_row(3), delib_row(0, 0.5), delib_row(1),
          {"request_id": "r1", "kind": "refusal", "status": "refused", "tier": "fast", "calls": []}]
FAST_COST = 100 * SMALL[0] + 50 * SMALL[1]          # 2e-4
DELIB_COST = 1000 * BIG[0] + 130 * BIG[1]           # 0.0139


def run(*specs: str, qps: float | None = None) -> dict[str, dict[str, Any]]:
    cfg = config()
    rows = rows_from_export(LEDGER)
    out, _ = forecast(cfg, price_book(cfg), rows, [pol.parse(s, cfg) for s in specs],
                      lambda c: "fast", qps=qps)
    return {p["policy"]: p for p in out["policies"]} | {"_": out}


def test_self_hosted_per_token_prices() -> None:
    p = price_book(config()).price("gpu")
    assert p.input == pytest.approx(GPU_IN, rel=1e-12) and p.output == pytest.approx(GPU_OUT, rel=1e-12)
    assert GPU_IN == pytest.approx(4e-7) and GPU_OUT == pytest.approx(4e-6)


def test_current_policy_is_the_measured_spend() -> None:
    res = run("current")
    cur = res["current"]
    assert cur["requests"] == 6 and cur["by_tier"] == {"deliberate": 2, "fast": 4}
    assert cur["window_cost_usd"] == pytest.approx(4 * FAST_COST + 2 * DELIB_COST, rel=1e-12)
    assert cur["measured_share"] == 1.0
    # quality: fast rows rated 1.0 in their bucket, deliberate 0.5 in theirs
    assert cur["expected_quality"] == pytest.approx((4 * 1.0 + 2 * 0.5) / 6)
    # QPS observed: 6 requests over ts 1000..1045
    assert res["_"]["qps"] == pytest.approx(6 / 45)
    assert cur["annual_usd"] == pytest.approx(cur["cost_per_request_usd"] * 6 / 45 * SECONDS_YEAR)


def test_always_fast_and_always_top_by_hand() -> None:
    res = run("always-fast", "always-top", qps=10)
    fast, top = res["always-fast"], res["always-top"]
    # deliberate rows (client prompt 200 = smallest prompt sent) on the fast profile: 1 x prompt in, 50 out
    d_on_fast = 200 * SMALL[0] + 50 * SMALL[1]
    assert fast["window_cost_usd"] == pytest.approx(4 * FAST_COST + 2 * d_on_fast, rel=1e-9)
    # fast rows on the deliberate profile: in_mult 1000/200 = 5, 130 out, all on big
    f_on_top = 100 * 5 * BIG[0] + 130 * BIG[1]
    assert top["window_cost_usd"] == pytest.approx(2 * DELIB_COST + 4 * f_on_top, rel=1e-9)
    assert top["by_tier"] == {"deliberate": 6}
    assert fast["monthly_usd"] == pytest.approx(fast["cost_per_request_usd"] * 10 * SECONDS_MONTH)
    assert top["delta_vs_current"] == pytest.approx(top["cost_per_request_usd"] / res["current"]["cost_per_request_usd"] - 1)
    assert fast["measured_share"] == pytest.approx(4 / 6)


def test_a_self_hosted_model_for_a_tier() -> None:
    res = run("selfhost:models.fast=gpu")
    p = res["selfhost"]
    # fast rows keep their 100 in / 50 out, repriced at the GPU's per-token prices; deliberate rows stay measured
    assert p["window_cost_usd"] == pytest.approx(4 * (100 * GPU_IN + 50 * GPU_OUT) + 2 * DELIB_COST, rel=1e-9)


def test_agents_and_thresholds() -> None:
    res = run("five:agents=5", "all-reasoning:reasoning_threshold=0.05,deliberate_threshold=0.99")
    # 5 agents instead of 3 (one model listed = 3 copies): the deliberate profile scales by 5/3
    d5 = 1000 * 5 / 3 * BIG[0] + 130 * 5 / 3 * BIG[1]
    assert res["five"]["window_cost_usd"] == pytest.approx(4 * FAST_COST + 2 * d5, rel=1e-9)
    # reasoning never ran: structural plan (1 call, mean visible output per observed call, half the thinking budget)
    r = res["all-reasoning"]
    assert r["by_tier"] == {"reasoning": 6} and r["cost_sources"] == {"structural": 6}
    out_per_call = (4 * 50 + 2 * 130) / (4 * 1 + 2 * 4)
    think = THINK_STEPS["medium"] * STEP_TOKENS * 0.5
    expect = sum(p * GPU_IN + (out_per_call + think) * GPU_OUT for p in [100] * 4 + [200] * 2)
    assert r["window_cost_usd"] == pytest.approx(expect, rel=1e-9)
    assert any("never ran" in a for a in res["_"]["assumptions"])


def test_reasoning_sweep_multiplier() -> None:
    cfg = config()
    rows = rows_from_export(LEDGER)
    _, fc = forecast(cfg, price_book(cfg), rows, [], lambda c: "fast", qps=100)
    s = sweep_reasoning(fc, rows, 100, (1, 8))
    k1, k8 = s["rows"]
    out_per_call = (4 * 50 + 2 * 130) / 12
    c1 = sum(p * GPU_IN + (out_per_call + 1 * STEP_TOKENS) * GPU_OUT for p in [100] * 4 + [200] * 2) / 6
    c8 = sum(p * GPU_IN + (out_per_call + 8 * STEP_TOKENS) * GPU_OUT for p in [100] * 4 + [200] * 2) / 6
    assert k1["cost_per_query_usd"] == pytest.approx(c1, rel=1e-9)
    assert k8["cost_per_query_usd"] == pytest.approx(c8, rel=1e-9)
    assert k8["multiplier_vs_k1"] == pytest.approx(c8 / c1)
    assert k8["annual_usd"] == pytest.approx(c8 * 100 * SECONDS_YEAR)
    assert not math.isnan(k8["latency_s"]) and k8["latency_s"] > k1["latency_s"]


@pytest.mark.parametrize("spec, why", [
    ("x:force=huge", "not configured"), ("x:agents=1", ">= 2"), ("x:reasoning_threshold=2", "within"),
    ("x:models.fast=nope", "not in model_list"), ("x:bogus=1", "unknown setting"), ("nosuch", "unknown policy"),
    ("x:effort.reasoning=max", "low, medium or high"),
])
def test_bad_policies_are_one_line_errors(spec: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        pol.parse(spec, config())


def test_bad_self_hosted_pricing_is_refused() -> None:
    cfg = TriageConfig.from_mapping({"model_list": [_entry("g", {"gpu_hour_usd": 3})],
                                     "tiers": {"fast": {"models": ["g"]}}}, "t")
    with pytest.raises(ValueError, match="'g'.*decode_tokens_per_s"):
        price_book(cfg)
