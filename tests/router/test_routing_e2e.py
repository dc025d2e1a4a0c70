"""End to end through the HTTP app with the official openai SDK: real Redis, simulated upstream.

Tier choice, every tier streaming, caps never exceeded (deliberation and
fallbacks included), vote and debate ledger records, config reload mid-flight.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis

from accounting import redis_keys
from tests.router.conftest import Proxy, make_config

EASY = [{"role": "user", "content": "What is the capital of France?"}]
HARD = [{"role": "user", "content": "Prove that there are infinitely many primes congruent to 3 mod 4. Then derive a "
         "closed form for the sum over n of 1/(n^2+1) and justify every step rigorously."}]


def ledger(proxy: Proxy, tenant: str, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The tenant's raw ledger records of served requests (refusals are ledgered too, and skipped here),
    waiting for settlements that run after the response."""
    r = redis.Redis.from_url(proxy.redis_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            recs = [orjson.loads(f[b"d"]) for _, f in r.xrange(redis_keys.ledger(tenant))]
            recs = [x for x in recs if x.get("kind", "request") == "request"]
            if len(recs) >= n or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)
    finally:
        r.close()


def fault(proxy: Proxy, model: str, kind: str, count: int = 1) -> None:
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": model, "fault": kind, "count": count})


def mock_settings(proxy: Proxy, **patch: Any) -> None:
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/settings", json=patch)


def reconfigure(proxy: Proxy, **overrides: Any) -> None:
    proxy.rewrite_config(make_config(proxy.mock.base_url, proxy.redis_url, **overrides))
    r = proxy.reload()
    assert r.status_code == 200, r.text


def test_tier_choice_and_transparency_headers(proxy: Proxy) -> None:
    client = proxy.client(api_key=proxy.create_key("e2e"))
    easy = client.chat.completions.with_raw_response.create(model="triage/auto", messages=EASY)
    hard = client.chat.completions.with_raw_response.create(model="triage/auto", messages=HARD)
    he, hh = easy.headers, hard.headers
    assert he["x-triage-tier"] == "fast" and hh["x-triage-tier"] in ("reasoning", "deliberate")
    assert float(he["x-triage-complexity"]) < float(hh["x-triage-complexity"])
    for h in (he, hh):
        assert h["x-triage-model"] and h["x-triage-decision"]
        assert float(h["x-triage-cost-usd"]) > 0
    body = hard.parse()
    assert body.usage.model_extra["cost"] == pytest.approx(float(hh["x-triage-cost-usd"]), rel=1e-6)
    recs = ledger(proxy, "e2e", 2)
    assert [r["tier"] for r in recs] == [he["x-triage-tier"], hh["x-triage-tier"]]
    assert recs[-1]["reason"] and recs[-1]["complexity"] == pytest.approx(float(hh["x-triage-complexity"]), abs=1e-3)


def test_ledger_keeps_the_full_decision(proxy: Proxy) -> None:
    client = proxy.client(api_key=proxy.create_key("dec"))
    client.chat.completions.create(model="triage/auto", messages=HARD, extra_headers={"x-triage-max-cost": "0.03"})
    d = ledger(proxy, "dec", 1)[0]["decision"]
    assert d["signals"] and d["candidates"] and d["cap_usd"] == 0.03
    assert all(c["estimate_usd"] <= 0.03 for c in d["candidates"])
    assert any("quality" in r["why"] for r in d["rejected"])  # fast was rejected for the hard prompt


@pytest.mark.parametrize("model", ["triage/fast", "triage/reasoning", "triage/deliberate", "small"])
def test_every_tier_streams_through_the_sdk(proxy: Proxy, model: str) -> None:
    client = proxy.client()
    chunks = list(client.chat.completions.create(model=model, messages=EASY, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Answer:")
    assert chunks[-1].choices == [] and chunks[-1].usage.model_extra["cost"] > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_debate_streams_through_the_sdk_with_transcript(proxy: Proxy) -> None:
    reconfigure(proxy, tiers={"fast": {"models": ["small"]},
                              "deliberate": {"models": ["big", "big"], "strategy": "debate", "rounds": 2,
                                             "aggregator": "big"}})
    client = proxy.client()
    chunks = list(client.chat.completions.create(model="triage/deliberate", messages=EASY, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"triage": {"transcript": True}}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Answer:")
    tr = next(c.model_extra["triage_transcript"] for c in chunks if "triage_transcript" in (c.model_extra or {}))
    assert tr["strategy"] == "debate" and tr["rounds_run"] == 2
    r = client.chat.completions.create(model="triage/deliberate", messages=EASY)
    assert "triage_transcript" not in (r.model_extra or {})  # only when asked


def test_vote_and_debate_both_leave_ledger_records(proxy: Proxy) -> None:
    mock_settings(proxy, disagreement=0.0)  # agents differ in seed/temperature, but this upstream always agrees
    key = proxy.create_key("delib")
    client = proxy.client(api_key=key)
    r = client.chat.completions.create(model="triage/deliberate", messages=EASY,
                                       extra_body={"triage": {"transcript": True}})
    assert r.choices[0].message.content.startswith("Answer:")
    assert r.model_extra["triage_transcript"]["strategy"] == "vote"
    reconfigure(proxy, tiers={"fast": {"models": ["small"]},
                              "deliberate": {"models": ["big", "big", "big"], "strategy": "debate", "rounds": 2,
                                             "aggregator": "big"}})
    r2 = client.chat.completions.create(model="triage/deliberate", messages=EASY)
    assert r2.choices[0].message.content
    vote, debate = ledger(proxy, "delib", 2)
    assert vote["tier"] == debate["tier"] == "deliberate"
    assert len(vote["calls"]) == 3  # the agents agree: majority, no aggregator call
    assert vote["decision"]["outcome"]["agreement"] == 1.0
    assert len(debate["calls"]) == 7  # 3 agents x 2 rounds + the aggregator
    for rec in (vote, debate):
        assert rec["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in rec["calls"]), rel=1e-6)


def test_cost_never_exceeds_cap_with_deliberation_and_fallbacks(proxy: Proxy) -> None:
    reconfigure(proxy, tiers={"fast": {"models": ["small", "big"]},
                              "reasoning": {"models": ["reasoner", "big"], "reasoning_effort": "high"},
                              "deliberate": {"models": ["big", "small", "big"], "strategy": "debate", "rounds": 3,
                                             "aggregator": "big"}})
    mock_settings(proxy, completion_tokens=100_000)  # every answer runs to max_tokens
    key = proxy.create_key("caps")
    client = proxy.client(api_key=key)
    seen_tiers: set[str] = set()
    caps: dict[str, float] = {}
    n = 0
    for cap in (0.002, 0.01, 0.03, 0.08):
        for model, stream in (("triage/fast", False), ("triage/reasoning", True), ("triage/deliberate", False),
                              ("triage/deliberate", True), ("triage/auto", False)):
            fault(proxy, "mock-small", "503")
            fault(proxy, "mock-big", "500")
            fault(proxy, "mock-reasoner", "502")
            headers = {"x-triage-max-cost": str(cap)}
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=HARD, stream=stream, max_tokens=300, extra_headers=headers)
                if stream:
                    for _ in raw.parse():
                        pass
                else:
                    assert float(raw.headers["x-triage-cost-usd"]) <= cap
                seen_tiers.add(raw.headers["x-triage-tier"])
                caps[raw.headers["x-request-id"]] = cap
                n += 1
            except openai.BadRequestError as e:  # the forced tier's cheapest answer is above this cap
                assert e.body["code"] == "cost_cap_below_minimum"
            with httpx.Client() as c:
                c.delete(proxy.mock.root_url + "/_mock/faults")
    recs = ledger(proxy, "caps", n)
    assert len(recs) == n and n >= 12
    ratios = [rec["cost_usd"] / caps[rec["request_id"]] for rec in recs]
    print(f"cost/cap over {n} capped requests: max {max(ratios):.3f}, mean {sum(ratios) / n:.3f}")
    for rec in recs:
        assert rec["cost_usd"] <= caps[rec["request_id"]] + 1e-12, rec
        assert rec["decision"]["cap_usd"] == caps[rec["request_id"]]
    assert any(c["hop"] == "fallback" for rec in recs for c in rec["calls"])
    assert {"fast", "reasoning", "deliberate"} <= seen_tiers


def test_cap_below_minimum_is_400_and_tight_budget_downgrades(proxy: Proxy) -> None:
    client = proxy.client()
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="triage/auto", messages=HARD, extra_headers={"x-triage-max-cost": "1e-9"})
    assert "cheapest possible answer" in ei.value.body["message"]
    raw = client.chat.completions.with_raw_response.create(model="triage/auto", messages=HARD,
                                                           extra_headers={"x-triage-max-cost": "0.0005"})
    assert raw.headers["x-triage-tier"] == "fast"  # the wanted tier did not fit: stepped down
    assert float(raw.headers["x-triage-cost-usd"]) <= 0.0005


def test_scope_budget_picks_the_first_plan_that_fits(proxy: Proxy) -> None:
    # A key budget smaller than deliberate's estimate: admission takes a reduced / lower plan, not a 429.
    key = proxy.create_key("thrifty", budget_usd=0.02, period="day")
    raw = proxy.client(api_key=key).chat.completions.with_raw_response.create(model="triage/auto", messages=HARD)
    assert raw.headers["x-triage-tier"] in ("fast", "reasoning", "deliberate")
    assert any(k in raw.headers["x-triage-decision"] for k in ("effort", "agents", "rounds", "max_tokens")) or \
        raw.headers["x-triage-tier"] == "fast", raw.headers["x-triage-decision"]
    assert float(raw.headers["x-triage-cost-usd"]) <= 0.02
    assert ledger(proxy, "thrifty", 1)[0]["cost_usd"] <= 0.02


def test_session_pins_the_tier(proxy: Proxy) -> None:
    client = proxy.client()
    h = {"x-triage-session": "conv-1"}
    first = client.chat.completions.with_raw_response.create(model="triage/auto", messages=HARD, extra_headers=h)
    second = client.chat.completions.with_raw_response.create(model="triage/auto", messages=EASY, extra_headers=h)
    assert first.headers["x-triage-tier"] != "fast"
    assert second.headers["x-triage-tier"] == first.headers["x-triage-tier"]
    other = client.chat.completions.with_raw_response.create(model="triage/auto", messages=EASY)
    assert other.headers["x-triage-tier"] == "fast"


def test_config_reload_changes_decisions_without_dropping_in_flight(proxy: Proxy) -> None:
    mock_settings(proxy, latency_ms=800)
    client = proxy.client(timeout=30)
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(model="triage/auto", messages=HARD)
            result["tier"] = raw.headers["x-triage-tier"]
            result["content"] = raw.parse().choices[0].message.content
        except Exception as e:  # noqa: BLE001 - reported below
            result["error"] = e

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)  # the request is now waiting on the upstream
    # Raise the thresholds so the same hard prompt now routes to fast.
    reconfigure(proxy, policy={"reasoning_threshold": 0.99, "deliberate_threshold": 0.995})
    mock_settings(proxy, latency_ms=0)
    after = client.chat.completions.with_raw_response.create(model="triage/auto", messages=HARD)
    t.join(30)
    assert "error" not in result, result.get("error")
    assert result["tier"] in ("reasoning", "deliberate") and result["content"].startswith("Answer:")
    assert after.headers["x-triage-tier"] == "fast"


def test_deliberate_stream_keepalives_over_http(proxy: Proxy, monkeypatch) -> None:
    from router.tiers import deliberate

    monkeypatch.setattr(deliberate, "KEEPALIVE_S", 0.05)  # the app runs in this process (uvicorn thread)
    mock_settings(proxy, latency_ms=400)
    lines: list[str] = []
    with httpx.Client(timeout=30) as c, c.stream(
            "POST", proxy.base_url + "/chat/completions", headers={"authorization": f"Bearer {proxy.master_key}"},
            json={"model": "triage/deliberate", "messages": EASY, "stream": True}) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln]
    first_data = next(i for i, ln in enumerate(lines) if ln.startswith("data:"))
    assert first_data >= 3 and all(ln.startswith(":") for ln in lines[:first_data])
    assert lines[-1] == "data: [DONE]"
    # and the SDK is unbothered by the comments
    mock_settings(proxy, latency_ms=200)
    chunks = list(proxy.client().chat.completions.create(model="triage/deliberate", messages=EASY, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Answer:")
