"""triage/cascade end to end against a simulated upstream that knows which answers are right.

The simulator's difficulty model (simulator/difficulty.py) decides per question whether the cheap
model ("mock-small", skill 0.45) is right, returns logprobs that carry it, and varies wrong answers
across seeds; /_mock/truth says what it knows. The tests compare the cascade's escalations, the
answers the client got and the ledger with that truth.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.router.conftest import Proxy
from tests.router.test_routing_e2e import ledger, mock_settings, reconfigure

SKILLS = {"mock-small": 0.45, "mock-reasoner": 0.95, "mock-big": 0.95}
QUESTIONS = [f"Question {i}: what is the value of item {i}?" for i in range(40)]
FAST = {"models": ["small"]}
REASONING = {"models": ["reasoner"], "reasoning_effort": "low"}


def truth(proxy: Proxy, model: str, q: str, **sample: Any) -> dict[str, Any]:
    r = httpx.post(proxy.mock.root_url + "/_mock/truth", json={"model": model, "question": q, **sample})
    assert r.status_code == 200, r.text
    return r.json()


def setup(proxy: Proxy, **cascade: Any) -> None:
    reconfigure(proxy, tiers={"fast": FAST, "reasoning": REASONING, "cascade": {"models": ["small"], **cascade}})
    mock_settings(proxy, difficulty=True, model_skill=SKILLS)


def ask(proxy: Proxy, client: Any, q: str, stream: bool = False) -> str:
    msgs = [{"role": "user", "content": q}]
    if not stream:
        r = client.chat.completions.create(model="triage/cascade", messages=msgs)
        assert r.choices[0].logprobs is None        # requested for the check, not by the client
        return r.choices[0].message.content
    chunks = list(client.chat.completions.create(model="triage/cascade", messages=msgs, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.model_extra["cost"] > 0
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_cascade_escalates_what_the_cheap_model_gets_wrong(proxy: Proxy) -> None:
    setup(proxy, samples=1)
    client = proxy.client(api_key=proxy.create_key("casc"))
    got = [ask(proxy, client, q) for q in QUESTIONS]
    recs = ledger(proxy, "casc", len(QUESTIONS))
    assert len(recs) == len(QUESTIONS)
    right_final = cheap_right = escalated = must_escalate = must_not = 0
    for q, text, rec in zip(QUESTIONS, got, recs):
        cheap = truth(proxy, "mock-small", q)
        sample = truth(proxy, "mock-small", q, seed=1, temperature=0.7)   # the second sample's seed/temperature
        strong = truth(proxy, "mock-reasoner", q)
        out = rec["decision"]["outcome"]
        models = [c["model"] for c in rec["calls"]]
        assert rec["tier"] == "cascade" and out["checks"] == ["structure", "logprobs", "samples"]
        assert sum(c["cost_usd"] for c in rec["calls"]) <= rec["decision"]["knobs"]["estimate_usd"] + 1e-12
        if out["escalated"]:
            escalated += 1
            assert text.startswith(f"Answer: {strong['answer']}") and out["why"]
            assert models == ["small", "small", "reasoner"] and rec["model"] == "reasoner"
        else:
            assert text.startswith(f"Answer: {cheap['answer']}")
            assert models == ["small", "small"] and rec["model"] == "small"
        # what the simulator knows decides the cases the check must get right
        if not cheap["correct"] and sample["answer"] != cheap["answer"]:
            assert out["escalated"], (q, out)          # wrong, and the samples disagree
            must_escalate += 1
        if cheap["correct"] and cheap["answer_logprob"] > -0.3:
            assert not out["escalated"], (q, out)      # right, confident, and samples agree (easy questions)
            must_not += 1
        right_final += text.startswith(f"Answer: {cheap['correct_answer']}")
        cheap_right += cheap["correct"]
    assert must_escalate >= 5 and must_not >= 5       # both kinds of case occur
    assert cheap_right < right_final                  # escalation bought quality...
    assert 0 < escalated < len(QUESTIONS)             # ...without sending everything up


def test_verifier_alone_escalates_exactly_the_wrong_answers(proxy: Proxy) -> None:
    setup(proxy, samples=0, logprobs=False, verifier="big")
    client = proxy.client(api_key=proxy.create_key("verif"))
    qs = QUESTIONS[:16]
    got = []
    for i, q in enumerate(qs):  # a stream settles after its last byte: wait for each row so rows keep order
        got.append(ask(proxy, client, q, stream=(i % 2 == 1)))
        ledger(proxy, "verif", i + 1)
    recs = ledger(proxy, "verif", len(qs))
    for q, text, rec in zip(qs, got, recs):
        cheap = truth(proxy, "mock-small", q)
        out = rec["decision"]["outcome"]
        assert out["checks"] == ["structure", "verifier"]
        assert out["escalated"] == (not cheap["correct"]), (q, out)   # this verifier is never fooled
        assert out["verifier"] == ("YES" if cheap["correct"] else "NO")
        expect = truth(proxy, "mock-reasoner", q)["answer"] if out["escalated"] else cheap["answer"]
        assert text.startswith(f"Answer: {expect}")
        assert [c["model"] for c in rec["calls"]][:2] == ["small", "big"]
        assert rec["streamed"] == (qs.index(q) % 2 == 1)


def test_escalation_header_on_non_streamed_answers(proxy: Proxy) -> None:
    setup(proxy, samples=1)
    client = proxy.client()
    seen = set()
    for q in QUESTIONS[:12]:
        h = client.chat.completions.with_raw_response.create(
            model="triage/cascade", messages=[{"role": "user", "content": q}]).headers
        seen.add(h["x-triage-escalated"].split(":")[0])
        assert (h["x-triage-model"] == "reasoner") == h["x-triage-escalated"].startswith("yes")
    assert seen == {"yes", "no"}


def test_stream_and_complete_agree(proxy: Proxy) -> None:
    setup(proxy, samples=1)
    client = proxy.client()
    for q in QUESTIONS[:8]:
        assert ask(proxy, client, q) == ask(proxy, client, q, stream=True)


def test_admission_holds_the_worst_case_and_caps_refuse(proxy: Proxy) -> None:
    setup(proxy, samples=2, verifier="big")
    client = proxy.client(api_key=proxy.create_key("hold"))
    raw = client.chat.completions.with_raw_response.create(model="triage/cascade",
                                                           messages=[{"role": "user", "content": QUESTIONS[0]}])
    assert raw.headers["x-triage-tier"] == "cascade"
    rec = ledger(proxy, "hold", 1)[0]
    cands = rec["decision"]["candidates"]
    full = cands[0]["estimate_usd"]
    # the hold covers cheap answer + 2 samples + verifier + the reasoning tier's whole plan
    assert full > max(c["estimate_usd"] for c in cands[1:])
    with pytest.raises(Exception) as e:
        client.chat.completions.create(model="triage/cascade", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                       extra_headers={"x-triage-max-cost": "0.0000001"})
    assert "cap" in str(e.value)


def test_auto_may_choose_cascade_when_its_quality_meets_the_target(proxy: Proxy) -> None:
    reconfigure(proxy, tiers={"fast": FAST, "reasoning": REASONING,
                              "cascade": {"models": ["small"], "quality": 0.85}},
                policy={"reasoning_threshold": 0.0})
    mock_settings(proxy, difficulty=True, model_skill=SKILLS)
    r = proxy.client().chat.completions.with_raw_response.create(
        model="triage/auto", messages=[{"role": "user", "content": QUESTIONS[1]}])
    assert r.headers["x-triage-tier"] == "cascade"     # expected cost below reasoning's at the same quality


def test_config_errors_name_the_problem(proxy: Proxy) -> None:
    from router.config import ConfigError, TriageConfig
    from tests.router.conftest import make_config

    bad = make_config(proxy.mock.base_url, proxy.redis_url,
                      tiers={"fast": FAST, "cascade": {"models": ["small"], "escalate_to": "deliberate"}})
    with pytest.raises(ConfigError, match="tiers.cascade.escalate_to"):
        TriageConfig.from_mapping(bad, "t")
    bad["tiers"]["cascade"] = {"models": ["small"], "samples": 1, "strategy": "vote"}
    with pytest.raises(ConfigError, match="strategy"):
        TriageConfig.from_mapping(bad, "t")


def test_a_provider_refusing_logprobs_still_gets_checked(proxy: Proxy) -> None:
    from tests.router.test_routing_e2e import fault

    setup(proxy, samples=0)
    fault(proxy, "mock-small", "400", count=1)      # the call asking for logprobs is refused
    client = proxy.client(api_key=proxy.create_key("nolp"))
    text = ask(proxy, client, QUESTIONS[2])
    rec = ledger(proxy, "nolp", 1)[0]
    assert text.startswith("Answer:")
    assert [c["status"] for c in rec["calls"]][:2][0] != "ok"      # the refused attempt is on the books
    assert "logprobs" not in rec["decision"]["outcome"]["checks"]


def test_n_choices_each_checked_and_recorded(proxy: Proxy) -> None:
    setup(proxy, samples=1)
    client = proxy.client(api_key=proxy.create_key("nch"))
    r = client.chat.completions.create(model="triage/cascade", n=2,
                                       messages=[{"role": "user", "content": QUESTIONS[3]}])
    assert len(r.choices) == 2
    out = ledger(proxy, "nch", 1)[0]["decision"]["outcome"]
    assert len(out["choices"]) == 2 and all("escalated" in c for c in out["choices"])
