"""Agents on every tier: tool calls (single, parallel), JSON mode and n=2, streamed and not,
through the official openai SDK and LangChain's ChatOpenAI, against one proxy for the module.

The expected tool calls are what the simulated upstream produces for the model that answered
(simulator/model.py: `tool_calls_for`), so "reassembled == produced" is checked exactly.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import openai
import pytest
import yaml

from simulator import model as mm
from simulator.server import MockServer
from simulator.state import MockSettings
from tests.router.conftest import MASTER, start_proxy

MODELS = ["triage/fast", "triage/cascade", "triage/reasoning", "triage/deliberate", "triage/auto"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a timezone.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}, "hour24": {"type": "boolean"}},
                   "required": ["tz"]}}}
TOOLSETS = {"single": [WEATHER], "parallel": [WEATHER, TIME]}
QUESTION = "What is the weather in Paris right now, and what time is it there?"
MESSAGES = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[tuple[str, MockServer]]:
    with MockServer(MockSettings()) as mock:
        base = mock.base_url

        def entry(name: str, i: float, o: float, reasoning: bool = False) -> dict[str, Any]:
            return {"model_name": name, "litellm_params": {"model": f"openai/mock-{name}", "api_base": base, "api_key": "sk-up"},
                    "model_info": {"input_cost_per_token": i, "output_cost_per_token": o, "supports_reasoning": reasoning}}

        cfg = {
            "model_list": [entry("small", 1e-6, 2e-6), entry("mid", 3e-6, 6e-6), entry("big", 10e-6, 20e-6)],
            # reasoning on a model without native reasoning: the think-then-answer path, which must stand aside
            "tiers": {"fast": {"models": ["small"]}, "cascade": {"models": ["small"]},
                      "reasoning": {"models": ["mid"], "reasoning_effort": "medium"},
                      "deliberate": {"models": ["big", "big", "big"], "strategy": "vote", "aggregator": "big"}},
            "redis_url": redis_server.url, "master_key": MASTER,
        }
        path = tmp_path_factory.mktemp("matrix") / "triage.yaml"
        path.write_text(yaml.safe_dump(cfg))
        server, thread, root = start_proxy(path)
        try:
            yield root, mock
        finally:
            server.should_exit = True
            thread.join(15)


def expected_calls(answered: str, tools: list[dict[str, Any]], mock: MockServer) -> list[tuple[str, str, dict[str, Any]]]:
    calls = mm.tool_calls_for(f"mock-{answered}", MESSAGES, {"tools": tools}, mock.state.settings.disagreement)
    assert calls, "the simulator answers a tools request with tool calls"
    return [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def no_think_prompt(mock: MockServer, since: int) -> None:
    """No upstream request this test made carries the think-then-answer instruction."""
    made = mock.state.total - since
    assert made > 0
    for rec in list(mock.state.last)[-made:]:
        first = rec["body"]["messages"][0]
        assert "FINAL ANSWER" not in str(first.get("content")), "think-then-answer prompt injected into a tools/JSON request"


def reassemble(chunks: list[Any]) -> tuple[list[tuple[str, str, dict[str, Any]]], str | None, str]:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    model = ""
    for ch in chunks:
        if ch.model:
            model = ch.model
        for c in ch.choices:
            for tc in c.delta.tool_calls or ():
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            finish = c.finish_reason or finish
    out = [(calls[i]["id"], calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)]
    return out, finish, model


# ---------------------------------------------------------------- openai SDK


@pytest.mark.parametrize("toolset", sorted(TOOLSETS))
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_openai_tool_calls(proxy: tuple[str, MockServer], model: str, stream: bool, toolset: str) -> None:
    root, mock = proxy
    since = mock.state.total
    client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0)
    tools = TOOLSETS[toolset]
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, tools=tools, stream=True, stream_options={"include_usage": True})
        chunks = list(raw.parse())
        got, finish, streamed_model = reassemble(chunks)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, tools=tools)
        resp = raw.parse()
        msg = resp.choices[0].message
        got = [(tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in msg.tool_calls or ()]
        finish = resp.choices[0].finish_reason
        assert resp.usage is not None and resp.usage.completion_tokens > 0
    # a stream's headers go out before a cascade may escalate: the chunks name the model that answered
    answered = streamed_model if stream else raw.headers["x-triage-model"]
    assert got == expected_calls(answered, tools, mock)
    assert len(got) == len(tools)
    assert finish == "tool_calls"
    if model != "triage/auto":
        assert raw.headers["x-triage-tier"] == model.split("/")[1]
    assert float(raw.headers.get("x-triage-cost-usd", "1")) > 0
    no_think_prompt(mock, since)


@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_openai_json_mode(proxy: tuple[str, MockServer], model: str, stream: bool, kind: str) -> None:
    root, mock = proxy
    since = mock.state.total
    client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0)
    if kind == "json_object":
        rf: dict[str, Any] = {"type": "json_object"}
    else:
        rf = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
            "type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["city", "population"], "additionalProperties": False}, "strict": True}}
    msgs = [{"role": "user", "content": "Give me a city as JSON."}]
    if stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs, response_format=rf, stream=True)
        chunks = [c for c in raw.parse() if c.choices]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        answered = chunks[-1].model
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs, response_format=rf)
        text = raw.parse().choices[0].message.content
        answered = raw.headers["x-triage-model"]
    assert text == mm.structured_content(f"mock-{answered}", msgs[0]["content"], rf, mock.state.settings.disagreement)
    doc = json.loads(text)
    if kind == "json_schema":
        assert set(doc) == {"city", "population"} and isinstance(doc["population"], int)
    no_think_prompt(mock, since)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_openai_n2(proxy: tuple[str, MockServer], model: str, stream: bool) -> None:
    root, mock = proxy
    client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0)
    msgs = [{"role": "user", "content": "Name a prime number."}]
    if stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs, n=2, stream=True,
                                                               stream_options={"include_usage": True})
        texts: dict[int, str] = {}
        chunks = list(raw.parse())
        for c in chunks:
            for ch in c.choices:
                texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
        usage = chunks[-1].usage
    else:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs, n=2)
        resp = raw.parse()
        texts = {ch.index: ch.message.content for ch in resp.choices}
        usage = resp.usage
    assert sorted(texts) == [0, 1]
    assert all(t.startswith("Answer:") for t in texts.values()), texts
    assert usage is not None and usage.completion_tokens > 0


# ---------------------------------------------------------------- LangChain


def _lc(root: str, model: str) -> Any:
    from langchain_openai import ChatOpenAI  # noqa: PLC0415 - only these tests need LangChain

    return ChatOpenAI(base_url=root + "/v1", api_key=MASTER, model=model, max_retries=0, timeout=30)


@pytest.mark.parametrize("toolset", sorted(TOOLSETS))
@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_langchain_bind_tools(proxy: tuple[str, MockServer], model: str, stream: bool, toolset: str) -> None:
    root, mock = proxy
    since = mock.state.total
    tools = TOOLSETS[toolset]
    llm = _lc(root, model).bind_tools(tools)
    if stream:
        acc: Any = None
        for ch in llm.stream(QUESTION):
            acc = ch if acc is None else acc + ch
        assert acc is not None
        msg: Any = acc
    else:
        msg = llm.invoke(QUESTION)
    answered = msg.response_metadata.get("model_name") or ""
    got = [(tc["id"], tc["name"], tc["args"]) for tc in msg.tool_calls]
    assert got == expected_calls(answered, tools, mock)
    assert msg.response_metadata.get("finish_reason") == "tool_calls"
    no_think_prompt(mock, since)


def test_answer_gate_forwards_tool_call_deltas_whole() -> None:
    """Think-then-answer streams hold back scratch text only; tool-call deltas pass as they come."""
    from router.tiers.reasoning import _AnswerGate

    gate = _AnswerGate()
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def ch(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = []
    for c in (ch({"role": "assistant", "content": None}),
              ch({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
              ch({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
              ch({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
              ch({}, "tool_calls")):
        out.extend(gate.feed(c))
    args = "".join(tc["function"].get("arguments", "") for o in out for tc in o["choices"][0]["delta"].get("tool_calls", ()))
    assert args == '{"a": 1}'
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_n2_costs_and_holds_scale_with_n(proxy: tuple[str, MockServer], redis_server: Any) -> None:
    """n executions cost n answers, and the admission hold is n worst cases: a cap that pays for one
    deliberation but not two refuses n=2 before any upstream call."""
    import redis

    from accounting import redis_keys as rk

    root, mock = proxy
    client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0)
    msgs = [{"role": "user", "content": "Name a colour."}]
    r1 = client.chat.completions.with_raw_response.create(model="triage/deliberate", messages=msgs)
    r2 = client.chat.completions.with_raw_response.create(model="triage/deliberate", messages=msgs, n=2)
    assert float(r2.headers["x-triage-cost-usd"]) == pytest.approx(2 * float(r1.headers["x-triage-cost-usd"]))
    r = redis.Redis.from_url(redis_server.url)
    recs = [json.loads(f[b"d"]) for _, f in r.xrange(rk.ledger("admin"))]
    r.close()
    est = {x["request_id"]: x["decision"]["candidates"][x["decision"]["admitted_index"]]["estimate_usd"] for x in recs}
    e1, e2 = est[r1.headers["x-request-id"]], est[r2.headers["x-request-id"]]
    assert e2 == pytest.approx(2 * e1)
    # a cap that pays for one full deliberation but not two: knobs shrink so that n of them fit
    cap = e1 * 1.5
    r3 = client.chat.completions.with_raw_response.create(model="triage/deliberate", messages=msgs, n=2,
                                                          extra_headers={"x-triage-max-cost": f"{cap:.10f}"})
    assert len(r3.parse().choices) == 2
    assert "->" in r3.headers["x-triage-decision"], "a reduced knob setting was chosen"
    r = redis.Redis.from_url(redis_server.url)
    recs = [json.loads(f[b"d"]) for _, f in r.xrange(rk.ledger("admin"))]
    r.close()
    rec3 = next(x for x in recs if x["request_id"] == r3.headers["x-request-id"])
    assert rec3["decision"]["candidates"][rec3["decision"]["admitted_index"]]["estimate_usd"] <= cap + 1e-12
    assert float(r3.headers["x-triage-cost-usd"]) <= cap
    before = mock.state.total
    with pytest.raises((openai.RateLimitError, openai.BadRequestError)):
        client.chat.completions.create(model="triage/deliberate", messages=msgs, n=2,
                                       extra_headers={"x-triage-max-cost": "0.0000001"})
    assert mock.state.total == before, "refused at admission: no upstream call"


def test_tool_call_votes_compare_name_and_canonical_arguments() -> None:
    from router.tiers.votes import message_key, tally

    def msg(*calls: tuple[str, str]) -> dict[str, Any]:
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
                               for i, (n, a) in enumerate(calls)]}

    a = msg(("get_weather", '{"city": "Paris", "unit": "c"}'))
    b = msg(("get_weather", '{"unit":"c","city":"Paris"}'))          # same call: key order and spacing differ
    c = msg(("get_weather", '{"city": "Lyon", "unit": "c"}'))
    d = msg(("get_time", '{"tz": "CET"}'), ("get_weather", '{"city":"Paris","unit":"c"}'))
    e = msg(("get_weather", '{"city":"Paris","unit":"c"}'), ("get_time", '{"tz":"CET"}'))  # parallel set, other order
    assert message_key(a) == message_key(b) != message_key(c)
    assert message_key(d) == message_key(e) != message_key(a)
    assert message_key({"role": "assistant", "content": "Answer: 4"}) != message_key(a)
    keys = [message_key(m) for m in (c, a, b)]
    assert tally(["", "", ""], keys) == (1, 2), "the call two agents agree on wins"
