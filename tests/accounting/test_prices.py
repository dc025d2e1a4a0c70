"""Exact spend fixtures: the numbers finance will check, computed by hand."""

from __future__ import annotations

import pytest

from accounting import LedgerRecord, PlanEstimate, PriceBook, PriceSpec, UpstreamCall, Usage
from accounting import redis_keys as rk


def test_litellm_price_and_override():
    pb = PriceBook.build([
        PriceSpec(name="small", litellm_model="openai/gpt-4o-mini"),
        PriceSpec(name="cheap", litellm_model="openai/gpt-4o-mini", model_info={"input_cost_per_token": 1e-7}),
    ])
    small = pb.price("small")
    assert (small.input, small.cached_input, small.output) == (1.5e-07, 7.5e-08, 6e-07)
    assert small.source == "litellm"
    assert pb.price("cheap").input == 1e-7 and pb.price("cheap").output == 6e-07
    assert pb.price("cheap").source == "config"
    # 1000 prompt of which 400 cached, 200 completion
    assert pb.cost("small", Usage(prompt_tokens=1000, cached_tokens=400, completion_tokens=200)) == pytest.approx(
        600 * 1.5e-7 + 400 * 7.5e-8 + 200 * 6e-7, rel=1e-12)


def test_unpriced_refused_unless_allowed():
    with pytest.raises(ValueError, match="'mystery'"):
        PriceBook.build([PriceSpec(name="mystery", litellm_model="acme/no-such-model")])
    pb = PriceBook.build(
        [PriceSpec(name="mystery", litellm_model="acme/no-such-model"),
         PriceSpec(name="known", model_info={"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6})],
        allow_unpriced_at_estimate=True)
    assert pb.price("mystery").unpriced
    assert pb.estimate("mystery", 100, 100) == pytest.approx(100 * 2e-6 + 100 * 8e-6)
    assert pb.cost("mystery", Usage(prompt_tokens=10, completion_tokens=10)) > 0  # never a silent $0


def test_custom_model_without_litellm_row():
    pb = PriceBook.build([PriceSpec(name="local", litellm_model="ollama/llama3-custom",
                                    model_info={"input_cost_per_token": 0, "output_cost_per_token": 0})])
    assert pb.cost("local", Usage(prompt_tokens=100, completion_tokens=100)) == 0.0  # explicitly free is allowed


def test_reasoning_and_cache_write_prices():
    pb = PriceBook.build([PriceSpec(name="r", model_info={
        "input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6, "cache_read_input_token_cost": 0.25e-6,
        "cache_creation_input_token_cost": 1.25e-6, "output_cost_per_reasoning_token": 5e-6})])
    u = Usage(prompt_tokens=1000, cached_tokens=200, cache_write_tokens=300, completion_tokens=900, reasoning_tokens=600)
    expect = 500 * 1e-6 + 200 * 0.25e-6 + 300 * 1.25e-6 + 300 * 4e-6 + 600 * 5e-6
    assert pb.cost("r", u) == pytest.approx(expect, rel=1e-12)
    # worst case: every prompt token at the dearest input price, every output at the dearest output price
    assert pb.estimate("r", 1000, 900) == pytest.approx(1000 * 1.25e-6 + 900 * 5e-6)


def test_reasoning_priced_as_output_by_default(prices):
    u = Usage.from_openai({"prompt_tokens": 100, "completion_tokens": 1000,
                           "completion_tokens_details": {"reasoning_tokens": 800}})
    assert u.reasoning_tokens == 800
    assert prices.cost("big", u) == pytest.approx(100 * 10e-6 + 1000 * 40e-6, rel=1e-12)


def test_usage_from_openai_cached_and_anthropic_style():
    u = Usage.from_openai({"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 20}})
    assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens) == (50, 20, 5)
    a = Usage.from_openai({"prompt_tokens": 50, "completion_tokens": 5, "cache_read_input_tokens": 10,
                           "cache_creation_input_tokens": 30})
    assert (a.cached_tokens, a.cache_write_tokens) == (10, 30)
    assert Usage.from_openai(None) == Usage()


async def _spend(acct, rid, calls, **kw):
    plain, info = await acct.keys.create("fx")
    p = await acct.authenticate(plain)
    adm = await acct.admit(p, rid, [PlanEstimate(tier=kw.get("tier", "fast"), model=calls[-1].model, estimate_usd=1.0)])
    rec = LedgerRecord(request_id=rid, key_id=p.key_id, tenant=p.tenant, calls=calls, **kw)
    assert await acct.settle(adm, rec)
    rows = await acct.redis.xrange(rk.ledger("fx"))
    import orjson

    d = orjson.loads(rows[-1][1][b"d"])
    spent = await acct.budgets.spent("tenant:fx")
    return d, spent


async def test_fixture_non_stream(acct):
    call = acct.upstream_call("fast", Usage(prompt_tokens=1200, completion_tokens=300))
    d, spent = await _spend(acct, "ns", [call])
    assert d["cost_usd"] == pytest.approx(1200 * 1e-6 + 300 * 2e-6, rel=1e-12)
    assert spent == pytest.approx(0.0018, abs=1e-9)
    # counterfactual: the same tokens on the top model
    assert d["counterfactual_cost_usd"] == pytest.approx(1200 * 10e-6 + 300 * 40e-6, rel=1e-12)


async def test_fixture_stream_final_usage_chunk(acct):
    final_chunk = {"id": "x", "choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 60,
                                                        "total_tokens": 100}}
    call = acct.upstream_call("fast", Usage.from_openai(final_chunk["usage"]))
    d, spent = await _spend(acct, "st", [call], streamed=True)
    assert d["streamed"] is True
    assert d["cost_usd"] == pytest.approx(40e-6 + 120e-6, rel=1e-12) and d["cost_usd"] > 0
    assert spent == pytest.approx(160e-6, abs=1e-9)


async def test_fixture_cached_tokens(acct):
    u = Usage.from_openai({"prompt_tokens": 2000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1500}})
    d, spent = await _spend(acct, "ca", [acct.upstream_call("big", u)], tier="deliberate")
    assert d["cost_usd"] == pytest.approx(500 * 10e-6 + 1500 * 2.5e-6 + 100 * 40e-6, rel=1e-12)
    assert d["calls"][0]["cached_tokens"] == 1500


async def test_fixture_reasoning_tokens(acct):
    u = Usage.from_openai({"prompt_tokens": 100, "completion_tokens": 2000,
                           "completion_tokens_details": {"reasoning_tokens": 1800}})
    d, _ = await _spend(acct, "re", [acct.upstream_call("fast", u)], tier="reasoning")
    assert d["cost_usd"] == pytest.approx(100 * 1e-6 + 2000 * 2e-6, rel=1e-12)
    assert d["calls"][0]["reasoning_tokens"] == 1800


async def test_fixture_alias_prices_as_its_target():
    # an alias is a second config name for the same litellm model: same price, own name in the ledger
    pb = PriceBook.build([PriceSpec(name="gpt-4o-mini", litellm_model="openai/gpt-4o-mini"),
                          PriceSpec(name="cheap-alias", litellm_model="gpt-4o-mini")])
    u = Usage(prompt_tokens=1000, completion_tokens=1000)
    assert pb.cost("cheap-alias", u) == pb.cost("gpt-4o-mini", u) == pytest.approx(1000 * 1.5e-7 + 1000 * 6e-7)


async def test_fixture_fallback_hop_bills_both_calls(acct):
    failed = UpstreamCall(model="big", prompt_tokens=500, completion_tokens=20, status="error", hop="primary")
    ok = acct.upstream_call("fast", Usage(prompt_tokens=500, completion_tokens=100), hop="fallback")
    d, spent = await _spend(acct, "fb", [failed, ok], tier="fast")
    first = 500 * 10e-6 + 20 * 40e-6  # the failed hop had produced tokens: it is billed (cost filled in at settle)
    second = 500 * 1e-6 + 100 * 2e-6
    assert [c["hop"] for c in d["calls"]] == ["primary", "fallback"]
    assert d["calls"][0]["cost_usd"] == pytest.approx(first, rel=1e-12)
    assert d["cost_usd"] == pytest.approx(first + second, rel=1e-12)
    assert spent == pytest.approx(first + second, abs=1e-9)
