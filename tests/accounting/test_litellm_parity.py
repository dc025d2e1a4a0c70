"""The gateway's bill against litellm's own cost functions, for the prices an audit found wrong:
long-context tiers, service tiers (priority/flex) and Anthropic 1-hour cache writes."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from accounting import PriceBook, PriceSpec, Usage  # noqa: E402

litellm = pytest.importorskip("litellm")
from litellm.types.utils import CacheCreationTokenDetails, PromptTokensDetailsWrapper  # noqa: E402
from litellm.types.utils import Usage as LUsage  # noqa: E402

MODELS = ["gemini-2.5-pro", "gpt-5.4", "gpt-4o", "claude-sonnet-4-5", "gpt-5"]


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.build([PriceSpec(name=m, litellm_model=m) for m in MODELS])


def litellm_cost(model: str, u: Usage, service_tier: str | None = None) -> float:
    details = PromptTokensDetailsWrapper(
        cached_tokens=u.cached_tokens or None,
        cache_creation_tokens=u.cache_write_tokens or None,
        cache_creation_token_details=CacheCreationTokenDetails(
            ephemeral_1h_input_tokens=u.cache_write_1h_tokens,
            ephemeral_5m_input_tokens=u.cache_write_tokens - u.cache_write_1h_tokens,
        ) if u.cache_write_tokens else None,
    )
    lu = LUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                total_tokens=u.prompt_tokens + u.completion_tokens, prompt_tokens_details=details,
                cache_creation_input_tokens=u.cache_write_tokens or None,
                cache_read_input_tokens=u.cached_tokens or None)
    p, c = litellm.cost_per_token(model=model, usage_object=lu, service_tier=service_tier)
    return p + c


CASES = [
    # (model, usage, service tier)
    ("gemini-2.5-pro", Usage(prompt_tokens=300_000, completion_tokens=1_000), None),  # the audit's $0.395 vs $0.780
    ("gemini-2.5-pro", Usage(prompt_tokens=150_000, completion_tokens=1_000), None),
    ("gemini-2.5-pro", Usage(prompt_tokens=200_000, completion_tokens=10), None),  # at the threshold: not above
    ("gemini-2.5-pro", Usage(prompt_tokens=250_000, cached_tokens=100_000, completion_tokens=500), None),
    ("gemini-2.5-pro", Usage(prompt_tokens=250_000, completion_tokens=500), "priority"),
    ("gemini-2.5-pro", Usage(prompt_tokens=250_000, cached_tokens=50_000, completion_tokens=500), "flex"),
    ("gemini-2.5-pro", Usage(prompt_tokens=1_000, completion_tokens=500), "priority"),
    ("gpt-5.4", Usage(prompt_tokens=300_000, cached_tokens=200_000, completion_tokens=2_000), None),
    ("gpt-5.4", Usage(prompt_tokens=300_000, cached_tokens=200_000, completion_tokens=2_000), "priority"),
    ("gpt-5.4", Usage(prompt_tokens=300_000, completion_tokens=2_000), "flex"),
    ("gpt-5.4", Usage(prompt_tokens=100_000, completion_tokens=2_000, reasoning_tokens=1_500), "flex"),
    ("gpt-4o", Usage(prompt_tokens=10_000, completion_tokens=1_000), "priority"),  # the audit's $0.030 vs $0.051
    ("gpt-4o", Usage(prompt_tokens=10_000, cached_tokens=4_000, completion_tokens=1_000), "priority"),
    ("gpt-4o", Usage(prompt_tokens=10_000, completion_tokens=1_000), "flex"),  # no flex price: standard
    ("gpt-5", Usage(prompt_tokens=10_000, cached_tokens=3_000, completion_tokens=1_000), "flex"),
    ("claude-sonnet-4-5", Usage(prompt_tokens=10_000, cache_write_tokens=4_000, cache_write_1h_tokens=3_000,
                                completion_tokens=100), None),
    ("claude-sonnet-4-5", Usage(prompt_tokens=10_000, cached_tokens=5_000, cache_write_tokens=4_000,
                                cache_write_1h_tokens=4_000, completion_tokens=100), None),
]


@pytest.mark.parametrize("model,usage,tier", CASES)
def test_cost_matches_litellm(book: PriceBook, model: str, usage: Usage, tier: str | None):
    want = litellm_cost(model, usage, tier)
    assert book.cost(model, usage, tier) == pytest.approx(want, rel=1e-12, abs=1e-18)


def test_audit_figures(book: PriceBook):
    assert book.cost("gemini-2.5-pro", Usage(prompt_tokens=300_000, completion_tokens=1_000)) == pytest.approx(0.765)
    assert book.cost("gpt-4o", Usage(prompt_tokens=10_000, completion_tokens=1_000), "priority") == pytest.approx(0.0595)
    # 1-hour writes are dearer than 5-minute ones (6e-6 vs 3.75e-6 per token)
    one_h = Usage(prompt_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=1_000)
    five_m = Usage(prompt_tokens=1_000, cache_write_tokens=1_000)
    assert book.cost("claude-sonnet-4-5", one_h) == pytest.approx(1_000 * 6e-6)
    assert book.cost("claude-sonnet-4-5", five_m) == pytest.approx(1_000 * 3.75e-6)


def test_usage_parses_one_hour_writes():
    anth = Usage.from_openai({"prompt_tokens": 100, "completion_tokens": 5, "cache_creation_input_tokens": 40,
                              "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 30}})
    assert (anth.cache_write_tokens, anth.cache_write_1h_tokens) == (40, 30)
    lit = Usage.from_openai({"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {
        "cache_creation_tokens": 40, "cache_creation_token_details": {"ephemeral_1h_input_tokens": 25}}})
    assert (lit.cache_write_tokens, lit.cache_write_1h_tokens) == (40, 25)


@pytest.mark.parametrize("model,tier", [("gemini-2.5-pro", None), ("gemini-2.5-pro", "priority"),
                                        ("gpt-5.4", None), ("gpt-5.4", "priority"), ("claude-sonnet-4-5", None)])
def test_admission_worst_case_covers_litellm(book: PriceBook, model: str, tier: str | None):
    """The estimate admission holds for a prompt bound covers whatever litellm bills for any prompt up to it,
    across the long-context threshold (the audit's 2x overspend)."""
    bound, max_out = 320_000, 2_000
    est = book.estimate(model, bound, max_out, tier)
    for prompt in (1_000, 199_999, 200_001, 272_001, bound):
        for u in (Usage(prompt_tokens=prompt, completion_tokens=max_out),
                  Usage(prompt_tokens=prompt, cache_write_tokens=prompt, cache_write_1h_tokens=prompt,
                        completion_tokens=max_out),
                  Usage(prompt_tokens=prompt, cached_tokens=prompt // 2, completion_tokens=max_out)):
            assert litellm_cost(model, u, tier) <= est * (1 + 1e-12), (prompt, u)
    # and the long-context band is really held: more than the base price would reserve
    base = book.price(model)
    assert est > bound * max(base.input, base.cache_write) + max_out * max(base.output, base.reasoning) or model in (
        "claude-sonnet-4-5",)


def test_price_map_version_named(book: PriceBook):
    assert book.version.startswith("litellm-")
