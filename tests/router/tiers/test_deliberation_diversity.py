"""Deliberation that deliberates: agents differ (seed, temperature, perspective) while sharing the
client's prefix, their agreement is recorded per request, and the ledger keeps it."""

from __future__ import annotations

import httpx
import pytest

from accounting.tokens import estimate_prompt_tokens
from router.tiers import votes
from router.tiers.cost import AGENT_ROLE_TOKENS
from simulator import difficulty as dm
from tests.router.conftest import Proxy
from tests.router.test_routing_e2e import ledger, mock_settings


def test_agent_variation_keeps_agent_one_as_asked_and_spreads_the_rest():
    assert votes.agent_variation(0, {"temperature": 0}, False) == ({}, [])
    seen = set()
    for i in range(1, 4):
        params, tail = votes.agent_variation(i, {"temperature": 0, "seed": 7}, False)
        assert params["seed"] == 7 + i and 0.5 <= params["temperature"] <= 1.0
        assert len(tail) == 1 and tail[0]["role"] == "system"
        assert estimate_prompt_tokens(tail) <= AGENT_ROLE_TOKENS
        seen.add(tail[0]["content"])
    assert len(seen) == 3
    params, _ = votes.agent_variation(1, {"temperature": 0.3}, True)
    assert "temperature" not in params    # native reasoning models reject a temperature


def test_agreement_rate():
    assert votes.agreement(["Answer: 4", "answer: 4.", "Answer: 5"]) == pytest.approx(2 / 3)
    assert votes.agreement(["Answer: 1"] * 3) == 1.0


def _hard_questions(n: int) -> list[str]:
    out = []
    for i in range(400):
        q = f"Question {i}: what is the value of item {i}?"
        if dm.judge("mock-big", q, {"mock-big": 0.45}).correct is False:
            out.append(q)
        if len(out) == n:
            return out
    raise AssertionError("no hard questions")


def test_temperature_zero_no_longer_means_a_unanimous_vote(proxy: Proxy) -> None:
    mock_settings(proxy, difficulty=True, model_skill={"mock-big": 0.45})
    key = proxy.create_key("div")
    client = proxy.client(api_key=key)
    qs = _hard_questions(4)
    for q in qs:
        r = client.chat.completions.create(model="triage/deliberate", temperature=0,
                                           messages=[{"role": "user", "content": q}],
                                           extra_body={"triage": {"transcript": True}})
        assert r.model_extra["triage_transcript"]["agreement_by_round"]
    bodies = [rec["body"] for rec in httpx.get(proxy.mock.root_url + "/_mock/stats").json()["last"]
              if rec["model"] == "mock-big" and rec["body"]["messages"][0]["content"] == qs[-1]]
    agents = [b for b in bodies if len(b["messages"]) <= 2]
    assert len(agents) == 3
    # shared prefix: the client's message first, byte-identical; then each agent's own tail
    assert all(b["messages"][0] == {"role": "user", "content": qs[-1]} for b in agents)
    assert len({(b.get("seed"), b.get("temperature")) for b in agents}) == 3
    assert sum(1 for b in agents if b.get("temperature") == 0) == 1
    recs = ledger(proxy, "div", len(qs))
    rates = [rec["decision"]["outcome"]["agreement"] for rec in recs]
    assert all(0 < a <= 1 for a in rates)
    assert min(rates) < 1.0       # on questions too hard for the agents, they disagree
    assert all(rec["decision"]["outcome"]["agents"] == 3 for rec in recs)


def test_easy_questions_stay_unanimous_and_cost_is_within_the_hold(proxy: Proxy) -> None:
    mock_settings(proxy, difficulty=True, model_skill={"mock-big": 0.99})
    key = proxy.create_key("div2")
    client = proxy.client(api_key=key)
    for stream in (False, True):
        kw = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        r = client.chat.completions.create(model="triage/deliberate", temperature=0,  # deliberate both times:
                                           messages=[{"role": "user", "content": "Question 3: easy?"}],
                                           extra_headers={"x-triage-cache": "off"}, **kw)  # no cache hit
        if stream:
            list(r)
    recs = ledger(proxy, "div2", 2)
    assert [rec["decision"]["outcome"]["agreement"] for rec in recs] == [1.0, 1.0]
    for rec in recs:
        cost = sum(c["cost_usd"] for c in rec["calls"])
        assert cost <= rec["decision"]["knobs"]["estimate_usd"] + 1e-12
