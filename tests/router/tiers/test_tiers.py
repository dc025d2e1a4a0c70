"""Tier executors against the real simulated upstream (router/mock_server.py) and the real PriceBook."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from accounting.tokens import estimate_prompt_tokens
from classifier import Classification
from router import policy
from router.config import TriageConfig
from router.http.schemas import validate_chat
from router.runtime import Snapshot
from router.tiers import deliberate
from router.tiers.base import ExecContext, Plan
from router.tiers.reasoning import _AnswerGate, extract_answer
from router.tiers.registry import EXECUTORS
from router.upstream import Upstream, UpstreamError
from router.upstream.chain import COOLDOWNS, MAX_ATTEMPTS, Step, complete_chain
from simulator import model as mm
from simulator.server import MockServer

PRICES = {
    "small": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "cache_read_input_token_cost": 0.5e-6},
    "small-b": {"input_cost_per_token": 1.5e-6, "output_cost_per_token": 3e-6, "cache_read_input_token_cost": 0.75e-6},
    "big": {"input_cost_per_token": 10e-6, "output_cost_per_token": 20e-6, "cache_read_input_token_cost": 5e-6},
    "reasoner": {"input_cost_per_token": 4e-6, "output_cost_per_token": 8e-6, "supports_reasoning": True},
    "thinker": {"input_cost_per_token": 2e-6, "output_cost_per_token": 4e-6},
}
TIERS = {
    "fast": {"models": ["small", "small-b"]},
    "reasoning": {"models": ["reasoner"], "reasoning_effort": "high"},
    "deliberate": {"models": ["big", "big", "big"], "strategy": "vote", "aggregator": "big"},
}
LONG = "Explain carefully why the sky appears blue during the day and red at sunset. " * 20


@pytest.fixture(scope="module")
def mock():
    with MockServer() as m:
        yield m


@pytest.fixture(autouse=True)
def _clean(mock):
    mock.reset()
    COOLDOWNS.reset()
    yield
    COOLDOWNS.reset()


@pytest.fixture()
async def up():
    u = Upstream()
    await u.start()
    yield u
    await u.close()


def snapshot(mock: MockServer, **tiers: Any) -> Snapshot:
    m = {
        "model_list": [{"model_name": n, "litellm_params": {"model": f"openai/mock-{n}", "api_base": mock.base_url,
                                                            "api_key": "sk-up", "timeout": 5}, "model_info": info}
                       for n, info in PRICES.items()],
        "tiers": {**TIERS, **tiers},
    }
    return Snapshot.build(TriageConfig.from_mapping(m, "test"))


def body(text: str = "What is 2+2?", **kw: Any) -> dict[str, Any]:
    return {"model": "triage/auto", "messages": [{"role": "user", "content": text}], **kw}


def plan_for(snap: Snapshot, tier: str, b: dict[str, Any], cap: float | None = None) -> Plan:
    d = policy.decide(validate_chat(b), b, Classification(0.5, tier, []), cap, snap.config, snap.prices,
                      estimate_prompt_tokens(b["messages"]), forced_tier=tier, tables=snap.policy_tables)
    return d.plans[0]


def ctx_for(snap: Snapshot, up: Upstream, b: dict[str, Any], budget: float, transcript: bool = False) -> ExecContext:
    return ExecContext(upstream=up, deployments=snap.deployments, prices=snap.prices, request_id="req-1",
                       body=dict(b), budget_usd=budget, want_transcript=transcript)


async def run(plan: Plan, ctx: ExecContext, stream: bool) -> tuple[str, dict[str, Any], list[Any]]:
    """(answer text, usage, raw items) for either mode."""
    ex = EXECUTORS[plan.tier]
    if not stream:
        r = await ex.complete(plan, ctx)
        return r["choices"][0]["message"]["content"] or "", r["usage"], [r]
    items = [it async for it in ex.stream(plan, ctx)]
    text = "".join((c.get("delta") or {}).get("content") or "" for it in items if isinstance(it, dict)
                   for c in it.get("choices") or ())
    usage = items[-1]["usage"]
    assert items[-1]["choices"] == []
    return text, usage, items


def last_body(mock: MockServer, model: str) -> dict[str, Any]:
    return mock.stats()["last_by_model"][f"mock-{model}"]["body"]


@pytest.mark.parametrize("stream", [False, True])
async def test_fast_answers_and_bills(mock, up, stream):
    snap = snapshot(mock)
    b = body()
    plan = plan_for(snap, "fast", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    text, usage, _ = await run(plan, ctx, stream)
    assert text.startswith("Answer:")
    assert [(c.model, c.status, c.hop) for c in ctx.calls] == [("small", "ok", "primary")]
    assert usage["cost"] == pytest.approx(ctx.spent_usd()) and usage["cost"] > 0
    assert usage["completion_tokens"] == 16
    assert last_body(mock, "small")["max_tokens"] == plan.max_tokens


async def test_passthrough_uses_only_the_named_model(mock, up):
    snap = snapshot(mock)
    b = {**body(), "model": "big"}
    d = policy.decide(validate_chat(b), b, Classification(0.1, "fast", []), None, snap.config, snap.prices, 30,
                      concrete_model="big", tables=snap.policy_tables)
    ctx = ctx_for(snap, up, b, d.plans[0].estimate_usd)
    r = await EXECUTORS["passthrough"].complete(d.plans[0], ctx)
    assert r["model"] == "big" and [c.model for c in ctx.calls] == ["big"]


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_native_sends_effort_and_thinking_room(mock, up, stream):
    snap = snapshot(mock)
    b = body(max_tokens=100)
    plan = plan_for(snap, "reasoning", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    text, usage, _ = await run(plan, ctx, stream)
    sent = last_body(mock, "reasoner")
    assert sent["reasoning_effort"] == "high" and "max_tokens" not in sent
    assert sent["max_completion_tokens"] == 100 + 16384
    assert usage["completion_tokens_details"]["reasoning_tokens"] == mm.REASONING_EFFORT["high"]
    assert text.startswith("Answer:")


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_without_native_support_thinks_then_answers(mock, up, stream):
    snap = snapshot(mock, reasoning={"models": ["thinker"], "reasoning_effort": "low"})
    b = body()
    plan = plan_for(snap, "reasoning", b)
    assert plan.think_steps == 3
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    text, _, _ = await run(plan, ctx, stream)
    sent = last_body(mock, "thinker")
    assert sent["messages"][0]["role"] == "system" and "FINAL ANSWER" in sent["messages"][0]["content"]
    assert "reasoning_effort" not in sent
    assert text.startswith("Answer:")  # the mock ignores the format: the whole text is the answer


def test_answer_extraction_hides_the_scratch_work():
    assert extract_answer("1. think\n2. more\nFINAL ANSWER: 42") == "42"
    gate = _AnswerGate()
    base = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    out = []
    for piece in ["1. add ", "two\nFINAL ", "ANSW", "ER: 4", "2"]:
        out += gate.feed({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    out += gate.feed({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    text = "".join((o["choices"][0]["delta"] or {}).get("content") or "" for o in out)
    assert text == "42" and out[-1]["choices"][0]["finish_reason"] == "stop"


async def test_fallback_on_5xx_then_cooldown_skips_the_failing_model(mock, up):
    snap = snapshot(mock)
    b = body()
    plan = plan_for(snap, "fast", b)
    mock.fault(503, model="mock-small", count=1)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    r = await EXECUTORS["fast"].complete(plan, ctx)
    assert r["model"] == "small-b"
    assert [(c.model, c.status, c.hop) for c in ctx.calls] == [
        ("small", "503 server_error", "primary"), ("small-b", "ok", "fallback")]
    assert ctx.calls[0].cost_usd == 0
    ctx2 = ctx_for(snap, up, b, plan.estimate_usd)
    await EXECUTORS["fast"].complete(plan, ctx2)
    assert [c.model for c in ctx2.calls] == ["small-b"]  # small is cooling down


async def test_retries_same_model_with_backoff_honouring_retry_after(mock, up):
    snap = snapshot(mock)
    b = body()
    plan = plan_for(snap, "reasoning", b)
    mock.fault(429, model="mock-reasoner", count=1, retry_after=0.3)
    mock.fault(500, model="mock-reasoner", count=1)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    t0 = time.perf_counter()
    await EXECUTORS["reasoning"].complete(plan, ctx)
    assert time.perf_counter() - t0 >= 0.3
    assert [(c.status, c.hop) for c in ctx.calls] == [
        ("429 rate_limited", "primary"), ("500 server_error", "retry"), ("ok", "retry")]


async def test_non_retryable_error_is_not_retried(mock, up):
    snap = snapshot(mock)
    b = body()
    plan = plan_for(snap, "fast", b)
    mock.fault(400, model="mock-small", count=1)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    with pytest.raises(UpstreamError) as ei:
        await EXECUTORS["fast"].complete(plan, ctx)
    assert ei.value.status == 400 and len(ctx.calls) == 1


async def test_retries_are_bounded(mock, up):
    snap = snapshot(mock)
    b = body()
    plan = plan_for(snap, "fast", b)
    mock.fault(502, model="*", count=100)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    with pytest.raises(UpstreamError):
        await EXECUTORS["fast"].complete(plan, ctx)
    assert len(ctx.calls) == MAX_ATTEMPTS and ctx.spent_usd() == 0


async def test_stream_falls_back_only_before_first_byte(mock, up):
    snap = snapshot(mock)
    b = body()
    plan = plan_for(snap, "fast", b)
    mock.fault(500, model="mock-small", count=1)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    text, _, items = await run(plan, ctx, True)
    assert text.startswith("Answer:") and items[0]["model"] == "small-b"
    COOLDOWNS.reset()
    mock.fault("disconnect", model="*", count=5, after_chunks=3)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    with pytest.raises(UpstreamError) as ei:
        _ = [x async for x in EXECUTORS["fast"].stream(plan, ctx)]
    assert ei.value.partial
    assert len(ctx.calls) == 1 and ctx.calls[0].estimated and ctx.calls[0].cost_usd > 0


async def test_client_leaving_mid_stream_bills_what_was_generated(mock, up):
    snap = snapshot(mock)
    mock.update_settings(completion_tokens=200, itl_ms=2)
    b = body()
    plan = plan_for(snap, "fast", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    gen = EXECUTORS["fast"].stream(plan, ctx)
    got = [await gen.__anext__() for _ in range(10)]
    await gen.aclose()
    assert len(got) == 10
    (call,) = ctx.calls
    assert call.status == "cancelled" and call.estimated
    assert 5 <= call.completion_tokens < 200 and 0 < call.cost_usd <= plan.estimate_usd


async def test_fallback_to_dearer_model_is_sized_to_the_allowance(mock, up):
    snap = snapshot(mock)
    mock.update_settings(completion_tokens=5000)  # every answer runs to its cap
    mock.fault(503, model="mock-small", count=1)
    b = body()
    p = estimate_prompt_tokens(b["messages"])
    allowance = snap.prices.estimate("small", p, 1000)
    ctx = ctx_for(snap, up, b, allowance)
    await complete_chain(ctx, ["small", "big"], b, max_tokens=1000, prompt=p, allowance=allowance, step=Step())
    sent = last_body(mock, "big")["max_tokens"]
    assert sent < 1000
    assert ctx.calls[-1].model == "big" and ctx.calls[-1].completion_tokens == sent
    assert ctx.spent_usd() <= allowance


def _distinct_question() -> str:
    for i in range(1000):
        q = f"Question {i}: which number?"
        answers = {mm.answer_for(m, q, 1.0) for m in ("mock-big", "mock-small", "mock-small-b")}
        if len(answers) == 3:
            return q
    raise AssertionError("no question splits the vote")


@pytest.mark.parametrize("stream", [False, True])
async def test_vote_majority_and_aggregator_pick(mock, up, stream):
    # same model everywhere: the mock's agents agree -> majority, no aggregator call
    snap = snapshot(mock)
    b = body(LONG)
    plan = plan_for(snap, "deliberate", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd, transcript=True)
    text, usage, items = await run(plan, ctx, stream)
    assert text.startswith("Answer:")
    assert [c.model for c in ctx.calls] == ["big"] * 3
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0  # identical layout across agents
    assert usage["cost"] == pytest.approx(ctx.spent_usd()) and ctx.spent_usd() <= plan.estimate_usd
    tr = items[0]["triage_transcript"] if not stream else next(i["triage_transcript"] for i in items
                                                               if isinstance(i, dict) and "triage_transcript" in i)
    assert tr["strategy"] == "vote" and sum(1 for e in tr["entries"] if "agent" in e) == 3
    assert next(e for e in tr["entries"] if e.get("event") == "vote")["how"] == "majority"

    # three different models that all disagree -> the aggregator picks one
    mock.update_settings(disagreement=1.0)
    snap = snapshot(mock, deliberate={"models": ["big", "small", "small-b"], "strategy": "vote", "aggregator": "big"})
    b = body(_distinct_question())
    plan = plan_for(snap, "deliberate", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd, transcript=True)
    text, usage, items = await run(plan, ctx, stream)
    assert sorted(c.model for c in ctx.calls) == ["big", "big", "small", "small-b"]
    assert last_body(mock, "big")["max_tokens"] == 16  # a pick, not a synthesis
    agent_texts = {c for c in (e.get("content") for e in ctx.transcript if "agent" in e)}
    assert text in agent_texts
    assert ctx.spent_usd() <= plan.estimate_usd


@pytest.mark.parametrize("stream", [False, True])
async def test_debate_rounds_cache_and_aggregator(mock, up, stream):
    snap = snapshot(mock, deliberate={"models": ["big", "big", "big"], "strategy": "debate", "rounds": 2,
                                      "aggregator": "big"})
    b = body(LONG)
    plan = plan_for(snap, "deliberate", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd, transcript=True)
    text, usage, items = await run(plan, ctx, stream)
    assert text.startswith("Answer:")
    assert len(ctx.calls) == 7  # 3 agents x 2 rounds + aggregator
    round2 = ctx.calls[3:6]
    assert all(c.prompt_tokens > ctx.calls[0].prompt_tokens for c in round2)
    assert sum(1 for c in round2 if c.cached_tokens > 0) >= 2  # the shared prefix hits across agents
    assert ctx.spent_usd() <= plan.estimate_usd
    tr = ctx.transcript
    assert any(e.get("role") == "aggregator" for e in tr)
    assert sum(1 for e in tr if e.get("round") == 2 and "agent" in e) == 3


async def test_debate_stops_early_when_budget_runs_short(mock, up):
    snap = snapshot(mock, deliberate={"models": ["big", "big", "big"], "strategy": "debate", "rounds": 3,
                                      "aggregator": "big"})
    b = body(LONG)
    plan = plan_for(snap, "deliberate", b)
    run_ = deliberate._Run(plan, ctx_for(snap, up, b, 0))
    one_round = sum(run_.worst(c, run_.p_agent, plan.max_tokens) for c in run_.chains)
    budget = one_round + run_.agg_reserve() + 1e-9  # pays for round 1 and the aggregator, nothing more
    ctx = ctx_for(snap, up, b, budget, transcript=True)
    r = await EXECUTORS["deliberate"].complete(plan, ctx)
    tr = r["triage_transcript"]
    assert tr["stopped_early"] and tr["rounds_run"] == 1
    assert len(ctx.calls) == 4 and ctx.spent_usd() <= budget


@pytest.mark.parametrize("strategy", ["vote", "debate"])
async def test_deliberate_stream_sends_keepalives_while_agents_work(mock, up, monkeypatch, strategy):
    monkeypatch.setattr(deliberate, "KEEPALIVE_S", 0.02)
    mock.update_settings(latency_ms=150)
    snap = snapshot(mock, deliberate={"models": ["big", "big"], "strategy": strategy, "aggregator": "big"})
    b = body()
    plan = plan_for(snap, "deliberate", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd)
    items = [it async for it in EXECUTORS["deliberate"].stream(plan, ctx)]
    first_dict = next(i for i, it in enumerate(items) if isinstance(it, dict))
    assert first_dict >= 2 and all(isinstance(it, str) for it in items[:first_dict])
    assert items[-1]["usage"]["cost"] == pytest.approx(ctx.spent_usd())


@pytest.mark.parametrize("stream", [False, True])
async def test_cost_never_exceeds_reservation_with_faults(mock, up, stream):
    """Answers always run to max_tokens, primaries fail, caps vary: spend stays within what was reserved."""
    mock.update_settings(completion_tokens=100_000)
    snap = snapshot(mock, deliberate={"models": ["big", "small", "big"], "strategy": "debate", "rounds": 2,
                                      "aggregator": "big"},
                    fast={"models": ["small", "big"]})
    rng = random.Random(11 + stream)
    worst_ratio = 0.0
    for i in range(12):
        tier = ("fast", "reasoning", "deliberate")[i % 3]
        b = body(LONG if i % 2 else "Short one?", max_tokens=rng.choice([64, 200, 400]))
        cap = 10 ** rng.uniform(-3.5, -1)
        try:
            plan = plan_for(snap, tier, b, cap)
        except Exception as e:  # cap below the tier's minimum: a 400, nothing spent
            assert getattr(e, "status", None) == 400
            continue
        mock.fault(503, model="mock-small", count=1)
        mock.fault(500, model="mock-big", count=1)
        ctx = ctx_for(snap, up, b, plan.estimate_usd)
        try:
            await run(plan, ctx, stream)
        except UpstreamError:
            pass
        assert ctx.spent_usd() <= plan.estimate_usd + 1e-12 <= cap + 1e-12
        worst_ratio = max(worst_ratio, ctx.spent_usd() / plan.estimate_usd)
        COOLDOWNS.reset()
        mock.clear_faults()
    print(f"worst spend/reservation ratio: {worst_ratio:.3f}")
    assert worst_ratio > 0.2  # the bound is exercised, not vacuous


class _AggregatorDown:
    """The real upstream, except that every aggregator call fails with a 503."""

    def __init__(self, up: Upstream):
        self.up = up

    @staticmethod
    def _is_agg(b: dict[str, Any]) -> bool:
        return b["messages"][-1]["content"] == deliberate.SYNTH_INSTRUCTION

    async def complete(self, dep: Any, b: dict[str, Any]) -> dict[str, Any]:
        if self._is_agg(b):
            raise UpstreamError(502, "server_error", "down", upstream_status=503)
        return await self.up.complete(dep, b)

    async def stream(self, dep: Any, b: dict[str, Any]) -> Any:
        if self._is_agg(b):
            raise UpstreamError(502, "server_error", "down", upstream_status=503)
        async for c in self.up.stream(dep, b):
            yield c


@pytest.mark.parametrize("stream", [False, True])
async def test_debate_aggregator_failure_falls_back_to_the_vote(mock, up, stream):
    snap = snapshot(mock, deliberate={"models": ["small", "small-b"], "strategy": "debate", "rounds": 1,
                                      "aggregator": "big"})
    b = body()
    plan = plan_for(snap, "deliberate", b)
    ctx = ctx_for(snap, up, b, plan.estimate_usd, transcript=True)
    ctx.upstream = _AggregatorDown(up)  # type: ignore[assignment]
    text, usage, _ = await run(plan, ctx, stream)
    assert text.startswith("Answer:")
    assert any(e.get("role") == "aggregator" and "error" in e for e in ctx.transcript)
    assert next(e for e in ctx.transcript if e.get("event") == "vote")["how"] in ("majority", "plurality")
    assert [c.status for c in ctx.calls].count("ok") == 2  # the agents; no second aggregator attempt as a pick
    assert ctx.spent_usd() <= plan.estimate_usd


@pytest.mark.parametrize("text", [
    "1. think\nFINAL ANSWER: 42", "FINAL ANSWER:   42  \n", "no marker at all\n",
    "1. x\nFINAL ANSWER: 7\nFINAL ANSWER: 8", "  FINAL ANSWER:\n\n  a b  c \n", "FINAL ANSWER:", "abc FINAL ANS",
])
def test_stream_and_complete_extract_the_same_answer(text):
    rng = random.Random(hash(text) & 0xFFFF)
    base = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        gate = _AnswerGate()
        out = []
        for piece in pieces:
            out += gate.feed({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        out += gate.feed({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        streamed = "".join((o["choices"][0]["delta"] or {}).get("content") or "" for o in out)
        assert streamed == extract_answer(text), pieces
