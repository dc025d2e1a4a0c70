"""The rest of the surface clients send: /v1/embeddings, /v1/completions, /v1/responses and Anthropic's
/v1/messages, each admitted, metered and settled through chat's path. One proxy for the module;
clients are the official openai and anthropic SDKs."""

from __future__ import annotations

import json
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest
import yaml

from simulator import model as mm
from simulator.server import MockServer
from simulator.state import MockSettings
from tests.router.conftest import MASTER, start_proxy

EMBED_PRICE = 0.02e-6
WEATHER = {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                          "required": ["city"]}}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[tuple[str, MockServer]]:
    with MockServer(MockSettings()) as mock:
        base = mock.base_url

        def entry(name: str, i: float, o: float, **info: Any) -> dict[str, Any]:
            return {"model_name": name, "litellm_params": {"model": f"openai/mock-{name}", "api_base": base, "api_key": "sk-up"},
                    "model_info": {"input_cost_per_token": i, "output_cost_per_token": o, **info}}

        cfg = {
            "model_list": [entry("small", 1e-6, 2e-6), entry("reasoner", 4e-6, 8e-6, supports_reasoning=True),
                           entry("big", 10e-6, 20e-6), entry("embed", EMBED_PRICE, 0.0, mode="embedding")],
            "tiers": {"fast": {"models": ["small"]}, "cascade": {"models": ["small"]}, "reasoning": {"models": ["reasoner"]},
                      "deliberate": {"models": ["big", "big", "big"], "strategy": "vote", "aggregator": "big"}},
            "redis_url": redis_server.url, "master_key": MASTER,
        }
        path = tmp_path_factory.mktemp("surface") / "triage.yaml"
        path.write_text(yaml.safe_dump(cfg))
        server, thread, root = start_proxy(path)
        try:
            yield root, mock
        finally:
            server.should_exit = True
            thread.join(15)


def oai(root: str, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=root + "/v1", api_key=key, max_retries=0)


def new_key(root: str, tenant: str) -> str:
    r = httpx.post(root + "/admin/keys", json={"tenant": tenant, "budget_usd": 10, "period": "day"},
                   headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code in (200, 201), r.text
    return r.json()["key"]


def ledger_cost(root: str, tenant: str) -> tuple[int, float]:
    r = httpx.get(root + "/admin/ledger/report", params={"tenant": tenant, "since": "1d", "by": "tier"},
                  headers={"authorization": f"Bearer {MASTER}"})
    assert r.status_code == 200, r.text
    t = r.json()["totals"]
    return int(t["requests"]), float(t["cost_usd"])


# ---------------------------------------------------------------- embeddings


def test_embeddings_priced_on_input_and_settled(proxy: tuple[str, MockServer]) -> None:
    root, mock = proxy
    key = new_key(root, "emb")
    raw = oai(root, key).embeddings.with_raw_response.create(model="embed", input=["hello world", "bonjour"])
    resp = raw.parse()
    assert [d.embedding for d in resp.data] == [mm.embedding_for("mock-embed", t) for t in ("hello world", "bonjour")]
    pt = resp.usage.prompt_tokens
    assert pt == (11 + 3) // 4 + (7 + 3) // 4
    cost = float(raw.headers["x-triage-cost-usd"])
    assert cost == pytest.approx(pt * EMBED_PRICE)
    n, total = ledger_cost(root, "emb")
    assert n == 1 and total == pytest.approx(cost)


def test_embeddings_refuse_router_and_unknown_models(proxy: tuple[str, MockServer]) -> None:
    root, _ = proxy
    with pytest.raises(openai.BadRequestError) as e:
        oai(root).embeddings.create(model="triage/auto", input="x")
    assert "embedding" in e.value.message
    with pytest.raises(openai.NotFoundError):
        oai(root).embeddings.create(model="nope", input="x")


# ---------------------------------------------------------------- legacy completions


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_completions(proxy: tuple[str, MockServer], stream: bool) -> None:
    root, _ = proxy
    key = new_key(root, f"cmpl-{stream}")
    c = oai(root, key)
    if stream:
        text = "".join(ch.choices[0].text for ch in c.completions.create(model="triage/fast", prompt="Say hi", stream=True)
                       if ch.choices)
    else:
        r = c.completions.create(model="triage/fast", prompt="Say hi")
        assert r.object == "text_completion" and r.usage and r.usage.completion_tokens > 0
        text = r.choices[0].text
    assert text.startswith("Answer:")
    n, total = ledger_cost(root, f"cmpl-{stream}")
    assert n == 1 and total > 0
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="triage/fast", prompt="x", echo=True)


# ---------------------------------------------------------------- responses


def test_responses_text_routed_through_tiers(proxy: tuple[str, MockServer]) -> None:
    root, _ = proxy
    key = new_key(root, "resp")
    raw = oai(root, key).responses.with_raw_response.create(model="triage/auto", input="What is 2+2?",
                                                            instructions="Be brief.")
    r = raw.parse()
    assert r.status == "completed" and r.output_text.startswith("Answer:")
    assert raw.headers["x-triage-tier"] in ("fast", "reasoning", "deliberate")
    assert r.usage is not None and r.usage.output_tokens > 0
    assert ledger_cost(root, "resp")[0] == 1
    with pytest.raises(openai.BadRequestError):
        oai(root).responses.create(model="triage/auto", input="x", previous_response_id="resp_1")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["triage/reasoning", "triage/deliberate"])
def test_responses_function_calls(proxy: tuple[str, MockServer], model: str, stream: bool) -> None:
    root, mock = proxy
    tools = [{"type": "function", **WEATHER}]
    question = "Weather in Oslo?"
    c = oai(root)
    if stream:
        events = list(c.responses.create(model=model, input=question, tools=tools, stream=True))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "response.function_call_arguments.delta" in kinds
        r = events[-1].response
    else:
        r = c.responses.create(model=model, input=question, tools=tools)
    calls = [o for o in r.output if o.type == "function_call"]
    upstream = "mock-reasoner" if model == "triage/reasoning" else "mock-big"
    want = mm.tool_calls_for(upstream, [{"role": "user", "content": question}],
                             {"tools": [{"type": "function", "function": WEATHER}]}, mock.state.settings.disagreement)
    assert [(x.call_id, x.name, json.loads(x.arguments)) for x in calls] == \
        [(w["id"], w["function"]["name"], json.loads(w["function"]["arguments"])) for w in want]
    # the tool result goes back in, statelessly, and the model answers in text
    follow = c.responses.create(model=model, tools=tools, input=[
        {"role": "user", "content": question},
        {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "12C, clear"}])
    assert follow.output_text.startswith("Answer:")


# ---------------------------------------------------------------- Anthropic messages


def ant(root: str, key: str = MASTER) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=root, api_key=key, max_retries=0)


@pytest.mark.parametrize("model", ["triage/fast", "triage/cascade", "triage/reasoning", "triage/deliberate", "triage/auto"])
def test_anthropic_sdk_text(proxy: tuple[str, MockServer], model: str) -> None:
    root, _ = proxy
    tenant = "ant-" + model.split("/")[1]
    key = new_key(root, tenant)
    r = ant(root, key).messages.create(model=model, max_tokens=256, system="Be brief.",
                                       messages=[{"role": "user", "content": "What is 3+4?"}])
    assert r.type == "message" and r.content[0].type == "text" and r.content[0].text.startswith("Answer:")
    assert r.stop_reason == "end_turn" and r.usage.output_tokens > 0
    with ant(root, key).messages.stream(model=model, max_tokens=256,
                                        messages=[{"role": "user", "content": "What is 3+4?"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.startswith("Answer:") and final.stop_reason == "end_turn"
    n, total = ledger_cost(root, tenant)
    assert n == 2 and total > 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["triage/fast", "triage/cascade", "triage/reasoning", "triage/deliberate"])
def test_anthropic_sdk_tool_use(proxy: tuple[str, MockServer], model: str, stream: bool) -> None:
    root, mock = proxy
    tools = [{"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}]
    msgs = [{"role": "user", "content": "Weather in Lima?"}]
    client = ant(root)
    if stream:
        with client.messages.stream(model=model, max_tokens=256, tools=tools, messages=msgs) as s:
            r = s.get_final_message()
    else:
        r = client.messages.create(model=model, max_tokens=256, tools=tools, messages=msgs)
    upstream = {"triage/fast": "mock-small", "triage/reasoning": "mock-reasoner", "triage/deliberate": "mock-big",
                "triage/cascade": "mock-small"}[model]
    # cascade: the cheap answer's tool call is well-formed for its schema, so it is not escalated
    want = mm.tool_calls_for(upstream, msgs, {"tools": [{"type": "function", "function": WEATHER}]},
                             mock.state.settings.disagreement)
    uses = [b for b in r.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == \
        [(w["id"], w["function"]["name"], json.loads(w["function"]["arguments"])) for w in want]
    assert r.stop_reason == "tool_use"
    # the tool_result round trip: Anthropic blocks in, a text answer out
    follow = client.messages.create(model=model, max_tokens=256, tools=tools, messages=[
        *msgs, {"role": "assistant", "content": [{"type": "tool_use", "id": uses[0].id, "name": uses[0].name,
                                                  "input": uses[0].input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"}]}])
    assert follow.content[0].type == "text" and follow.stop_reason == "end_turn"


def test_anthropic_errors_in_anthropic_shape(proxy: tuple[str, MockServer]) -> None:
    root, _ = proxy
    with pytest.raises(anthropic.AuthenticationError) as e:
        ant(root, "sk-wrong").messages.create(model="triage/fast", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        ant(root).messages.create(model="claude-nope", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    r = httpx.post(root + "/v1/messages", headers={"x-api-key": MASTER},
                   json={"model": "triage/fast", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_count_tokens(proxy: tuple[str, MockServer]) -> None:
    root, _ = proxy
    msgs = [{"role": "user", "content": "How many tokens is this sentence, roughly?"}]
    n = ant(root).messages.count_tokens(model="triage/auto", messages=msgs)
    assert 5 < n.input_tokens < 40
    with pytest.raises(anthropic.AuthenticationError):
        ant(root, "sk-wrong").messages.count_tokens(model="triage/auto", messages=msgs)
