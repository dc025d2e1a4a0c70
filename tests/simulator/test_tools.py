"""The simulated upstream answers tools requests with tool calls, streamed as OpenAI does, and JSON mode with JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx

from simulator import model as mm
from simulator.server import MockServer
from simulator.state import MockSettings

TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "n": {"type": "integer"}, "ok": {"type": "boolean"}, "u": {"enum": ["c", "f"]}}}}},
    {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}}, "x": {"type": "number"}}}}},
]
MSGS = [{"role": "user", "content": "call the tools please"}]


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    out = []
    for line in r.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def test_tool_calls_streamed_in_pieces_with_indexes() -> None:
    with MockServer(MockSettings()) as m, httpx.Client(base_url=m.base_url) as c:
        body = {"model": "mock-x", "messages": MSGS, "tools": TOOLS, "stream": True}
        evs = _events(c.post("/chat/completions", json=body))
        deltas = [e["choices"][0]["delta"] for e in evs if e["choices"]]
        tc_deltas = [d["tool_calls"][0] for d in deltas if d.get("tool_calls")]
        # each call: a header delta with id + name and empty arguments, then argument pieces
        heads = [t for t in tc_deltas if "id" in t]
        assert [h["index"] for h in heads] == [0, 1] and [h["function"]["name"] for h in heads] == ["a", "b"]
        assert all(h["function"]["arguments"] == "" for h in heads)
        pieces = [t for t in tc_deltas if "id" not in t and t["index"] == 0]
        assert len(pieces) >= 3, "arguments arrive across several deltas"
        args0 = "".join(t["function"]["arguments"] for t in tc_deltas if t["index"] == 0)
        assert json.loads(args0).keys() == {"city", "n", "ok", "u"}
        assert evs[-1]["choices"][0]["finish_reason"] == "tool_calls"

        full = c.post("/chat/completions", json={**body, "stream": False}).json()
        msg = full["choices"][0]["message"]
        assert msg["content"] is None and full["choices"][0]["finish_reason"] == "tool_calls"
        assert msg["tool_calls"] == mm.tool_calls_for("mock-x", MSGS, body, m.state.settings.disagreement)
        assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == json.loads(args0)


def test_tool_choice_and_tool_results() -> None:
    with MockServer(MockSettings()) as m, httpx.Client(base_url=m.base_url) as c:
        named = {"model": "mock-x", "messages": MSGS, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "b"}}}
        calls = c.post("/chat/completions", json=named).json()["choices"][0]["message"]["tool_calls"]
        assert [t["function"]["name"] for t in calls] == ["b"]
        single = c.post("/chat/completions", json={"model": "mock-x", "messages": MSGS, "tools": TOOLS,
                                                    "parallel_tool_calls": False}).json()
        assert len(single["choices"][0]["message"]["tool_calls"]) == 1
        none = c.post("/chat/completions", json={"model": "mock-x", "messages": MSGS, "tools": TOOLS, "tool_choice": "none"}).json()
        assert none["choices"][0]["message"]["content"].startswith("Answer:")
        after = MSGS + [{"role": "assistant", "content": None, "tool_calls": calls},
                        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "42"}]
        done = c.post("/chat/completions", json={"model": "mock-x", "messages": after, "tools": TOOLS}).json()
        assert done["choices"][0]["finish_reason"] == "stop", "a tool result gets a text answer, so agent loops end"


def test_json_mode_and_schema() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}
    with MockServer(MockSettings()) as m, httpx.Client(base_url=m.base_url) as c:
        r = c.post("/chat/completions", json={"model": "mock-x", "messages": MSGS, "response_format": {"type": "json_object"}}).json()
        assert set(json.loads(r["choices"][0]["message"]["content"])) == {"answer"}
        rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
        body = {"model": "mock-x", "messages": MSGS, "response_format": rf, "stream": True}
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in _events(c.post("/chat/completions", json=body)) if e["choices"])
        doc = json.loads(text)
        assert set(doc) == {"name", "age"} and isinstance(doc["age"], int)


def test_n_choices() -> None:
    with MockServer(MockSettings()) as m, httpx.Client(base_url=m.base_url) as c:
        r = c.post("/chat/completions", json={"model": "mock-x", "messages": MSGS, "n": 3}).json()
        assert [ch["index"] for ch in r["choices"]] == [0, 1, 2]
        one = c.post("/chat/completions", json={"model": "mock-x", "messages": MSGS}).json()
        assert r["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]
        evs = _events(c.post("/chat/completions", json={"model": "mock-x", "messages": MSGS, "n": 2, "stream": True}))
        assert {e["choices"][0]["index"] for e in evs if e["choices"]} == {0, 1}
