"""Property: no executor spends past the estimate it was admitted with.

Random prices (cache writes and reasoning tokens dearer than input/output, or not), random tier
knobs, prompts, client max_tokens, caps and upstream failures that push the chain onto a dearer
fallback; the real policy plans, the real executors run against the real simulator (which answers
up to max_tokens), and the billed cost of every attempt is summed from the real PriceBook.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounting.tokens import estimate_prompt_tokens
from classifier import Classification
from router import policy
from router.config import TriageConfig
from router.http.errors import ProxyError
from router.http.schemas import validate_chat
from router.runtime import Snapshot
from router.tiers.base import ExecContext, Plan
from router.tiers.registry import EXECUTORS
from router.upstream import Upstream, UpstreamError
from router.upstream.chain import COOLDOWNS
from simulator.server import MockServer
from simulator.state import MockSettings

MODELS = ("small", "mid", "dear", "reasoner")  # the simulator thinks natively for "reasoner" only

price = st.floats(min_value=1e-8, max_value=1e-4, allow_nan=False, allow_infinity=False)


@st.composite
def model_info(draw: st.DrawFn, name: str) -> dict[str, Any]:
    info: dict[str, Any] = {"input_cost_per_token": draw(price), "output_cost_per_token": draw(price)}
    if draw(st.booleans()):
        info["cache_creation_input_token_cost"] = info["input_cost_per_token"] * draw(st.floats(1.0, 2.0))
        info["cache_read_input_token_cost"] = info["input_cost_per_token"] * 0.1
    if draw(st.booleans()):
        info["output_cost_per_reasoning_token"] = info["output_cost_per_token"] * draw(st.floats(0.5, 3.0))
    if name == "reasoner":
        info["supports_reasoning"] = True
    return info


@st.composite
def case(draw: st.DrawFn) -> dict[str, Any]:
    chain = draw(st.lists(st.sampled_from(MODELS[:3]), min_size=1, max_size=3, unique=True))
    tiers: dict[str, Any] = {"fast": {"models": chain}}
    reasoning = {"models": draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True)),
                 "reasoning_effort": draw(st.sampled_from(["low", "medium", "high"]))}
    if draw(st.booleans()):
        reasoning["thinking_budget_tokens"] = draw(st.integers(64, 4096))
    tiers["reasoning"] = reasoning
    strategy = draw(st.sampled_from(["vote", "debate"]))
    tiers["deliberate"] = {
        "models": draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3)),
        "strategy": strategy, "rounds": draw(st.integers(1, 3)),
        "aggregator": draw(st.sampled_from(MODELS)),
    }
    if draw(st.booleans()):
        tiers["deliberate"]["reasoning_effort"] = "low"
    tiers["cascade"] = {"models": chain, "samples": draw(st.integers(0, 2)),
                        "verifier": draw(st.one_of(st.none(), st.sampled_from(MODELS))),
                        "escalate_to": draw(st.sampled_from(["reasoning", "deliberate"])),
                        "threshold": draw(st.sampled_from([0.05, 0.5, 0.95]))}
    return {
        "infos": {m: draw(model_info(m)) for m in MODELS},
        "tiers": tiers,
        "tier": draw(st.sampled_from(["fast", "cascade", "reasoning", "deliberate", "passthrough"])),
        "concrete": draw(st.sampled_from(MODELS)),
        "words": draw(st.integers(1, 400)),
        "max_tokens": draw(st.one_of(st.none(), st.integers(1, 600))),
        "cap_fraction": draw(st.one_of(st.none(), st.floats(0.05, 1.0))),
        "plan_index": draw(st.integers(0, 11)),
        "faults": draw(st.lists(st.tuples(st.sampled_from(MODELS), st.sampled_from(["500", "429", "disconnect"])),
                                max_size=3)),
        "stream": draw(st.booleans()),
        "disagreement": draw(st.sampled_from([0.0, 0.5, 1.0])),
        # Below 1: the executor was handed less than the plan's worst case (as after a partial
        # fail-open admission); it must still stay inside what it was given.
        "budget_fraction": draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0))),
    }


@pytest.fixture(scope="module")
def mock():
    # Every answer runs to max_tokens, so the worst case is actually reached, not just bounded.
    with MockServer(MockSettings(completion_tokens=100_000)) as m:
        yield m


async def _run(plan: Plan, snap: Snapshot, body: dict[str, Any], stream: bool, budget: float) -> float:
    up = Upstream()
    await up.start()
    ctx = ExecContext(upstream=up, deployments=snap.deployments, prices=snap.prices, request_id="prop",
                      body=body, budget_usd=budget)
    try:
        ex = EXECUTORS[plan.tier]
        if stream:
            async for _ in ex.stream(plan, ctx):
                pass
        else:
            await ex.complete(plan, ctx)
    except (UpstreamError, ProxyError):
        pass  # a failed request is billed too; the bound must hold for it as well
    finally:
        await up.close()
    return ctx.spent_usd()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(c=case())
def test_no_executor_spends_past_its_admitted_estimate(mock: MockServer, c: dict[str, Any]) -> None:
    mock.reset()
    COOLDOWNS.reset()
    mock.update_settings(disagreement=c["disagreement"])
    cfg = TriageConfig.from_mapping({
        "model_list": [{"model_name": m, "litellm_params": {"model": f"openai/mock-{m}", "api_base": mock.base_url,
                                                            "api_key": "sk-up", "timeout": 5},
                        "model_info": c["infos"][m]} for m in MODELS],
        "tiers": c["tiers"],
        "policy": {"default_max_tokens": 256},
    }, "prop")
    snap = Snapshot.build(cfg)
    body: dict[str, Any] = {"model": "triage/auto",
                            "messages": [{"role": "user", "content": "why is the sky blue " * c["words"]}]}
    if c["max_tokens"] is not None:
        body["max_tokens"] = c["max_tokens"]
    req = validate_chat(body)
    p = estimate_prompt_tokens(body["messages"])
    forced = None if c["tier"] == "passthrough" else c["tier"]
    concrete = c["concrete"] if c["tier"] == "passthrough" else None

    def decide(cap: float | None) -> Any:
        return policy.decide(req, body, Classification(0.5, forced or "fast", []), cap, cfg, snap.prices, p,
                             forced_tier=forced, concrete_model=concrete, tables=snap.policy_tables)

    d = decide(None)
    if c["cap_fraction"] is not None:
        try:
            d = decide(d.plans[0].estimate_usd * c["cap_fraction"])
        except ProxyError:
            return  # the cap is below the cheapest answer: refused before any spend
    plan = d.plans[min(c["plan_index"], len(d.plans) - 1)]
    if d.cap_usd is not None:
        assert plan.estimate_usd <= d.cap_usd * (1 + 1e-9)
    for model, fault in c["faults"]:
        mock.fault(fault, model=f"mock-{model}", count=1, retry_after=0)
    budget = plan.estimate_usd * c["budget_fraction"]
    spent = asyncio.run(_run(plan, snap, body, c["stream"], budget))
    assert spent <= budget * (1 + 1e-9) + 1e-15, (plan, budget, spent)
