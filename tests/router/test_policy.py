"""router/policy.py: tier choice, worst-case estimates, knob ladder, caps. Pure: no network."""

from __future__ import annotations

import random
from typing import Any

import pytest

from accounting import PriceBook, PriceSpec
from classifier import Classification, Classifier
from router import policy
from router.config import TriageConfig
from router.http.errors import ProxyError
from router.http.schemas import validate_chat
from router.session import SessionPins
from router.tiers.cost import AGENT_ROLE_TOKENS

PRICES = {
    "small": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
    "small-b": {"input_cost_per_token": 1.5e-6, "output_cost_per_token": 3e-6},
    "big": {"input_cost_per_token": 10e-6, "output_cost_per_token": 20e-6},
    "reasoner": {"input_cost_per_token": 4e-6, "output_cost_per_token": 8e-6, "supports_reasoning": True},
    "thinker": {"input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6},
}


def mapping(**tiers: Any) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": n, "litellm_params": {"model": f"openai/{n}", "api_base": "http://127.0.0.1:9/v1"},
                        "model_info": info} for n, info in PRICES.items()],
        "tiers": tiers or {
            "fast": {"models": ["small", "small-b"]},
            "reasoning": {"models": ["reasoner"], "reasoning_effort": "high"},
            "deliberate": {"models": ["big", "big", "big"], "strategy": "debate", "rounds": 2, "aggregator": "big"},
        },
    }


def load(m: dict[str, Any]) -> tuple[TriageConfig, PriceBook, policy.PolicyTables]:
    cfg = TriageConfig.from_mapping(m, "test")
    prices = PriceBook.build([PriceSpec(name=e.model_name, model_info=e.model_info.model_dump(exclude_none=True))
                              for e in cfg.model_list], price_map={})
    return cfg, prices, policy.build_tables(cfg, prices)


@pytest.fixture(scope="module")
def env() -> tuple[TriageConfig, PriceBook, policy.PolicyTables]:
    return load(mapping())


RAW = {"model": "triage/auto", "messages": [{"role": "user", "content": "x" * 400}]}
REQ = validate_chat(RAW)
P = 120


def cls(cx: float, tier: str) -> Classification:
    return Classification(cx, tier, ["test"])


def decide(env: Any, cx: float = 0.1, tier: str = "fast", cap: float | None = None, req: Any = REQ, **kw: Any) -> Any:
    cfg, prices, tables = env
    return policy.decide(req, RAW, cls(cx, tier), cap, cfg, prices, P, tables=tables, **kw)


def test_tier_follows_complexity(env):
    assert decide(env, 0.1, "fast").plans[0].tier == "fast"
    assert decide(env, 0.6, "reasoning").plans[0].tier == "reasoning"
    d = decide(env, 0.9, "deliberate")
    assert d.plans[0].tier == "deliberate" and d.preferred == "deliberate"
    assert "deliberate" in d.reason


def test_real_classifier_easy_vs_hard(env):
    clf = Classifier.load()
    cfg, prices, tables = env
    easy = [{"role": "user", "content": "What is the capital of France?"}]
    hard = [{"role": "user", "content": "Prove that there are infinitely many primes congruent to 3 mod 4. Then derive "
             "a closed form for the sum over n of 1/(n^2+1) and justify every step rigorously."}]
    de = policy.decide(REQ, RAW, clf.classify(easy), None, cfg, prices, P, tables=tables)
    dh = policy.decide(REQ, RAW, clf.classify(hard), None, cfg, prices, P, tables=tables)
    assert de.plans[0].tier == "fast"
    assert dh.plans[0].tier in ("reasoning", "deliberate")
    assert dh.plans[0].estimate_usd > 10 * de.plans[0].estimate_usd


def test_config_thresholds_override_classifier_tier():
    m = mapping()
    m["policy"] = {"reasoning_threshold": 0.2, "deliberate_threshold": 0.3}
    env2 = load(m)
    assert decide(env2, 0.25, "fast").plans[0].tier == "reasoning"
    assert decide(env2, 0.35, "fast").plans[0].tier == "deliberate"
    assert decide(env2, 0.1, "deliberate").plans[0].tier == "fast"


def test_cheapest_tier_meeting_the_quality_target():
    m = mapping()
    m["tiers"]["reasoning"]["quality"] = 0.95  # claims to beat deliberate (0.92 default) and is cheaper
    env2 = load(m)
    d = decide(env2, 0.9, "deliberate")
    assert d.plans[0].tier == "reasoning"
    assert d.target_quality == pytest.approx(0.92)
    assert any(r["tier"] == "deliberate" and "dearer" in r["why"] for r in d.rejected)
    assert any(r["tier"] == "fast" and "quality" in r["why"] for r in d.rejected)


def test_missing_tier_goes_up_to_meet_target():
    env2 = load(mapping(fast={"models": ["small"]}, deliberate={"models": ["big", "big"]}))
    assert decide(env2, 0.6, "reasoning").plans[0].tier == "deliberate"


def test_estimates_are_worst_case_of_the_chain(env):
    cfg, prices, _ = env
    fast = decide(env).plans[0]
    # the chain's dearer model bounds the plan: a fallback can never cost more than was reserved
    assert fast.estimate_usd == pytest.approx(prices.estimate("small-b", P, fast.max_tokens))
    r = decide(env, 0.6, "reasoning").plans[0]
    assert r.reasoning_effort == "high" and r.max_tokens == 1024 + 16384
    assert r.estimate_usd == pytest.approx(prices.estimate("reasoner", P, r.max_tokens))
    d = decide(env, 0.9, "deliberate").plans[0]
    n, m = 3, d.max_tokens
    q = P + n * (m + 16) + 160
    role = AGENT_ROLE_TOKENS   # each agent's perspective message
    expect = n * prices.estimate("big", P + role, m) + n * prices.estimate("big", q + role, m) + prices.estimate("big", q, m)
    assert (d.strategy, d.rounds, len(d.models)) == ("debate", 2, 3)
    assert d.knobs()["strategy"] == "debate" and d.knobs()["agents"] == 3 and "strategy" not in fast.knobs()
    assert d.estimate_usd == pytest.approx(expect)


def test_plans_degrade_in_order(env):
    d = decide(env, 0.9, "deliberate")
    tiers = [p.tier for p in d.plans]
    assert tiers[0] == "deliberate" and "reasoning" in tiers
    # within the chosen tier, each candidate is cheaper than the one before
    delib = [p.estimate_usd for p in d.plans if p.tier == "deliberate"]
    assert delib == sorted(delib, reverse=True)
    notes = [p.note for p in d.plans if p.tier == "deliberate"]
    assert notes[0] == "" and "rounds 2->1" in notes[1] and any("agents 3->2" in n for n in notes)


def test_knob_reduction_under_cap(env):
    full = decide(env, 0.6, "reasoning").plans[0]
    cap = full.estimate_usd * 0.5  # high effort no longer fits; medium does
    d = decide(env, 0.6, "reasoning", cap=cap)
    assert d.plans[0].tier == "reasoning" and d.plans[0].reasoning_effort == "medium"
    assert "effort high->medium" in d.plans[0].note
    assert all(p.estimate_usd <= cap for p in d.plans)
    assert any("over cap" in r["why"] for r in d.rejected)


def test_downgrade_under_tight_cap(env):
    cap = 0.004  # below any reasoning setting (low effort alone is 1024 thinking tokens at $8/M)
    d = decide(env, 0.6, "reasoning", cap=cap)
    assert d.plans[0].tier == "fast"
    assert "stepped down" in d.reason


def test_no_downgrade_when_disabled():
    m = mapping()
    m["policy"] = {"allow_downgrade": False}
    env2 = load(m)
    assert {p.tier for p in decide(env2, 0.6, "reasoning").plans} == {"reasoning"}


def test_forced_tier_stays_in_tier(env):
    d = decide(env, 0.05, "fast", forced_tier="deliberate")
    assert {p.tier for p in d.plans} == {"deliberate"}
    assert d.reason.startswith("forced")


def test_session_pin_prefers_the_pinned_tier_but_may_step_down(env):
    d = decide(env, 0.05, "fast", pinned_tier="reasoning")
    assert d.plans[0].tier == "reasoning" and d.reason.startswith("session pin")
    assert decide(env, 0.05, "fast", pinned_tier="reasoning", cap=0.004).plans[0].tier == "fast"


def test_concrete_model_is_budgeted_passthrough(env):
    cfg, prices, _ = env
    d = decide(env, concrete_model="big")
    p = d.plans[0]
    assert p.tier == "passthrough" and p.models == ["big"]
    assert p.estimate_usd == pytest.approx(prices.estimate("big", P, p.max_tokens))


def test_cap_below_minimum_is_400_naming_the_minimum(env):
    cfg, prices, _ = env
    minimum = prices.estimate("small-b", P, policy.MIN_ANSWER_TOKENS)
    with pytest.raises(ProxyError) as ei:
        decide(env, 0.9, "deliberate", cap=minimum * 0.99)
    e = ei.value
    assert e.status == 400 and e.code == "cost_cap_below_minimum"
    assert f"${minimum:.6f}" in e.message
    ok = decide(env, 0.9, "deliberate", cap=minimum * 1.0001)
    assert ok.plans[0].max_tokens >= policy.MIN_ANSWER_TOKENS and ok.plans[0].estimate_usd <= minimum * 1.0001


def test_cap_fit_shrinks_max_tokens_exactly(env):
    cfg, prices, _ = env
    cap = prices.estimate("small-b", P, 100)
    d = decide(env, cap=cap)
    p = d.plans[0]
    assert p.tier == "fast" and p.max_tokens == 100 and "(cap)" in p.note


def test_client_max_tokens_and_effort_are_ceilings(env):
    raw = {**RAW, "max_tokens": 50, "reasoning_effort": "low"}
    d = decide(env, 0.6, "reasoning", req=validate_chat(raw))
    p = d.plans[0]
    assert p.reasoning_effort == "low" and p.answer_tokens == 50 and p.max_tokens == 50 + 1024


def test_non_native_reasoning_gets_think_steps():
    env2 = load(mapping(fast={"models": ["small"]}, reasoning={"models": ["thinker"], "reasoning_effort": "low"}))
    p = decide(env2, 0.6, "reasoning").plans[0]
    assert p.reasoning_effort is None and p.think_steps == policy.THINK_STEPS["low"]
    assert p.max_tokens == 1024 + policy.THINK_STEPS["low"] * policy.STEP_TOKENS


def test_every_candidate_is_within_cap_property(env):
    rng = random.Random(7)
    for _ in range(400):
        cx = rng.random()
        tier = "fast" if cx < 0.5 else ("reasoning" if cx < 0.75 else "deliberate")
        cap = 10 ** rng.uniform(-6, -0.5)
        try:
            d = decide(env, cx, tier, cap=cap)
        except ProxyError as e:
            assert e.status == 400
            continue
        assert d.plans and len(d.plans) <= policy.MAX_PLANS
        assert all(p.estimate_usd <= cap + 1e-15 for p in d.plans)


def test_reload_changes_decisions_and_tables_are_per_config(env):
    cfg, prices, tables = env
    d1 = policy.decide(REQ, RAW, cls(0.6, "reasoning"), None, cfg, prices, P)
    m = mapping()
    m["policy"] = {"reasoning_threshold": 0.9, "deliberate_threshold": 0.95}
    cfg2, prices2, _ = load(m)
    d2 = policy.decide(REQ, RAW, cls(0.6, "reasoning"), None, cfg2, prices2, P)
    assert (d1.plans[0].tier, d2.plans[0].tier) == ("reasoning", "fast")
    # stale tables passed with a new config are not used
    d3 = policy.decide(REQ, RAW, cls(0.6, "reasoning"), None, cfg2, prices2, P, tables=tables)
    assert d3.plans[0].tier == "fast"


def test_session_pins_ttl_and_capacity(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("router.session._now", lambda: now[0])
    s = SessionPins(capacity=2)
    s.pin("t", "s1", "deliberate", 10)
    assert s.get("t", "s1") == "deliberate" and s.get("other", "s1") is None
    now[0] += 11
    assert s.get("t", "s1") is None
    s.pin("t", "a", "fast", 10)
    s.pin("t", "b", "fast", 10)
    s.pin("t", "c", "fast", 10)
    assert len(s) == 2 and s.get("t", "a") is None
