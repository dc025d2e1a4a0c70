"""The simulated provider: formulas, streaming, faults, control API, and real SDK clients."""

from __future__ import annotations

import time
import urllib.error

import httpx
import openai
import orjson
import pytest

from router.http.sse import SSEDecoder
from simulator import model as mm
from simulator.server import MockServer
from simulator.state import MockSettings


@pytest.fixture(scope="module")
def mock():
    with MockServer(MockSettings()) as m:
        yield m


@pytest.fixture()
def srv(mock: MockServer):
    mock.reset()
    return mock


def post(m: MockServer, body: dict, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    return httpx.post(m.root_url + path, json=body, headers=headers, timeout=10)


def events(resp: httpx.Response) -> list[bytes]:
    dec = SSEDecoder()
    return dec.feed(resp.content) + dec.flush()


def msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def test_prompt_tokens_follow_documented_formula(srv):
    body = {"model": "mock-fast", "messages": msgs("What is 2+2?")}
    # ceil(14/4)+4 = 8 for the system message, ceil(12/4)+4 = 7 for the user, +3
    assert mm.prompt_tokens_for(body["messages"])[0] == 8 + 7 + 3
    u = post(srv, body).json()["usage"]
    assert u["prompt_tokens"] == 18
    assert u["completion_tokens"] == 16
    assert u["total_tokens"] == 34
    assert u["prompt_tokens_details"]["cached_tokens"] == 0
    assert u["completion_tokens_details"]["reasoning_tokens"] == 0
    # multi-byte text counts UTF-8 bytes; image parts count 85
    parts = [{"role": "user", "content": [{"type": "text", "text": "é" * 4}, {"type": "image_url", "image_url": {}}]}]
    assert mm.prompt_tokens_for(parts)[0] == (8 + 3) // 4 + 4 + 85 + 3


def test_prompt_cache_hits_on_repeated_prefix_in_128_blocks(srv):
    long_sys = {"role": "system", "content": "x" * 2000}  # 500 + 4 = 504 tokens
    a = {"model": "mock-fast", "messages": [long_sys, {"role": "user", "content": "q1"}]}
    b = {"model": "mock-fast", "messages": [long_sys, {"role": "user", "content": "another question"}]}
    assert post(srv, a).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # shared prefix = the system message (504 tokens) -> 3 blocks of 128
    assert post(srv, b).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 384
    # the identical request is a full-prefix hit: 504 + 5 = 509 -> 384 still (floor to 128)
    u = post(srv, a).json()["usage"]
    assert u["prompt_tokens_details"]["cached_tokens"] == (504 + 5) // 128 * 128
    # caches are per model, and short prefixes never hit
    assert post(srv, dict(a, model="mock-mini")).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    short = {"model": "mock-fast", "messages": msgs("tiny")}
    post(srv, short)
    assert post(srv, short).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_reasoning_tokens_by_effort_and_cap(srv):
    base = {"model": "o3-mini", "messages": msgs("prove it")}
    u = post(srv, base).json()["usage"]
    assert u["completion_tokens_details"]["reasoning_tokens"] == 512
    assert u["completion_tokens"] == 512 + 16
    u = post(srv, dict(base, reasoning_effort="high")).json()["usage"]
    assert u["completion_tokens_details"]["reasoning_tokens"] == 2048
    r = post(srv, dict(base, reasoning_effort="low", max_completion_tokens=140)).json()
    assert r["usage"]["completion_tokens_details"]["reasoning_tokens"] == 128
    assert r["usage"]["completion_tokens"] == 140
    assert r["choices"][0]["finish_reason"] == "length"
    r = post(srv, dict(base, reasoning_effort="high", max_tokens=100)).json()
    assert r["usage"]["completion_tokens"] == 100 == r["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert r["choices"][0]["message"]["content"] == ""
    # non-reasoning models ignore reasoning_effort
    u = post(srv, dict(base, model="mock-fast", reasoning_effort="high")).json()["usage"]
    assert u["completion_tokens_details"]["reasoning_tokens"] == 0


def test_answers_are_deterministic_and_models_sometimes_disagree(srv):
    qs = [f"question number {i}?" for i in range(40)]
    models = ["mock-fast", "mock-mini", "gpt-4o-mini"]
    first = {}
    disagreements = 0
    for q in qs:
        answers = set()
        for m in models:
            c = post(srv, {"model": m, "messages": msgs(q)}).json()["choices"][0]["message"]["content"]
            assert c.startswith("Answer: ")
            answers.add(c.splitlines()[0])
            first.setdefault((m, q), c)
        disagreements += len(answers) > 1
    assert 0 < disagreements < len(qs)
    again = post(srv, {"model": "mock-fast", "messages": msgs(qs[0])}).json()["choices"][0]["message"]["content"]
    assert again == first[("mock-fast", qs[0])]
    assert all(mm.answer_for(m, q, 0.0) == mm.answer_for("mock-fast", q, 0.0) for m in models for q in qs)


def test_stream_with_and_without_include_usage(srv):
    body = {"model": "mock-fast", "messages": msgs("hi"), "stream": True}
    r = post(srv, body, **{"x-mock-completion-tokens": "5"})
    assert r.headers["content-type"].startswith("text/event-stream")
    evs = events(r)
    assert evs[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in evs[:-1]]
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).startswith("Answer: ")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(chunks) == 1 + 5 + 1  # role, one per visible token, finish
    r = post(srv, dict(body, stream_options={"include_usage": True}), **{"x-mock-completion-tokens": "5"})
    chunks = [orjson.loads(e) for e in events(r)[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert all(c["usage"] is None for c in chunks[:-1])


def test_latency_headers_and_settings(srv):
    body = {"model": "mock-fast", "messages": msgs("slow?")}
    t = time.perf_counter()
    post(srv, body, **{"x-mock-latency-ms": "150"})
    assert time.perf_counter() - t >= 0.15
    t = time.perf_counter()
    r = post(srv, dict(body, stream=True), **{"x-mock-ttft-ms": "50", "x-mock-itl-ms": "10",
                                              "x-mock-completion-tokens": "6"})
    assert time.perf_counter() - t >= 0.05 + 5 * 0.01
    assert events(r)[-1] == b"[DONE]"
    srv.update_settings(model_overrides={"mock-mini": {"completion_tokens": 3}})
    assert post(srv, dict(body, model="mock-mini")).json()["usage"]["completion_tokens"] == 3
    assert post(srv, body).json()["usage"]["completion_tokens"] == 16


@pytest.mark.parametrize("fault,status", [("500", 500), ("502", 502), ("503", 503), ("429", 429)])
def test_status_faults_by_header(srv, fault, status):
    r = post(srv, {"model": "mock-fast", "messages": msgs("x")}, **{"x-mock-fault": fault})
    assert r.status_code == status
    assert "error" in r.json()
    if status == 429:
        assert r.headers["retry-after"] == "1"


def test_control_api_faults_count_model_and_stats(srv):
    srv.fault("503", model="mock-mini", count=2)
    srv.fault("429", model="*", count=1, retry_after=7)
    body = {"model": "mock-mini", "messages": msgs("x"), "seed": 7, "tools": [{"type": "function"}],
            "response_format": {"type": "json_object"}, "weird_field": {"a": 1}}
    assert post(srv, body).status_code == 503
    assert post(srv, body).status_code == 503
    r = post(srv, body)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert post(srv, body).status_code == 200
    st = srv.stats()
    assert st["requests"] == {"mock-mini": 4}
    assert st["faults_injected"] == {"503": 2, "429": 1}
    last = st["last_by_model"]["mock-mini"]["body"]
    assert last["seed"] == 7 and last["weird_field"] == {"a": 1} and last["response_format"]["type"] == "json_object"
    srv.fault("500", count=5)
    assert srv.clear_faults()["faults"] == []
    assert post(srv, body).status_code == 200
    srv.reset()
    assert srv.stats()["total"] == 0
    with pytest.raises(urllib.error.HTTPError):
        srv.fault("nonsense")


def test_auth_is_recorded_hashed_not_plain(srv):
    post(srv, {"model": "mock-fast", "messages": msgs("x")}, authorization="Bearer sk-test-123")
    rec = srv.stats()["last"][-1]
    assert "sk-test-123" not in orjson.dumps(rec).decode()
    import hashlib

    assert rec["api_key_sha256"] == hashlib.sha256(b"sk-test-123").hexdigest()[:16]


def test_stream_faults_on_the_wire(srv):
    body = {"model": "mock-fast", "messages": msgs("x"), "stream": True}
    r = post(srv, body, **{"x-mock-fault": "truncate", "x-mock-after-chunks": "3"})
    evs = events(r)
    assert len(evs) == 3 and b"[DONE]" not in evs
    with pytest.raises(httpx.HTTPError):
        post(srv, body, **{"x-mock-fault": "disconnect"})
    r = post(srv, body, **{"x-mock-fault": "malformed"})
    with pytest.raises(orjson.JSONDecodeError):
        [orjson.loads(e) for e in events(r) if e != b"[DONE]"]
    r = post(srv, {"model": "mock-fast", "messages": msgs("x")}, **{"x-mock-fault": "malformed"})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


def test_timeout_fault_hangs_until_client_gives_up(srv):
    with pytest.raises(httpx.TimeoutException):
        httpx.post(srv.root_url + "/v1/chat/completions", json={"model": "mock-fast", "messages": msgs("x")},
                   headers={"x-mock-fault": "timeout"}, timeout=0.3)


def test_models_health_and_bad_requests(srv):
    ids = [m["id"] for m in httpx.get(srv.base_url + "/models").json()["data"]]
    assert "mock-fast" in ids
    assert httpx.get(srv.root_url + "/health").json() == {"status": "ok"}
    assert httpx.post(srv.base_url + "/chat/completions", content=b"{nope").status_code == 400
    assert httpx.get(srv.root_url + "/nowhere").status_code == 404
    # /chat/completions without /v1 works too (some clients strip the version)
    assert post(srv, {"model": "mock-fast", "messages": msgs("x")}, path="/chat/completions").status_code == 200


def test_anthropic_messages_api(srv):
    body = {"model": "claude-mock", "system": "s" * 1200, "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    r = post(srv, body, path="/v1/messages").json()
    assert r["type"] == "message" and r["content"][0]["text"].startswith("Answer: ")
    sys_tokens = 300 + 4
    assert r["usage"] == {"input_tokens": sys_tokens + 5 + 3, "output_tokens": 8,
                          "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    assert r["stop_reason"] == "max_tokens"
    r = post(srv, body, path="/v1/messages").json()
    assert r["usage"]["cache_read_input_tokens"] == 256
    assert r["usage"]["input_tokens"] == sys_tokens + 5 + 3 - 256
    r = post(srv, dict(body, stream=True), path="/v1/messages")
    assert b"event: message_stop" in r.content
    r = post(srv, body, path="/v1/messages", **{"x-mock-fault": "429"})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"


def test_official_openai_sdk_against_mock(srv):
    client = openai.OpenAI(base_url=srv.base_url, api_key="sk-mock", max_retries=0)
    r = client.chat.completions.create(model="o3-mini", messages=msgs("sdk?"), reasoning_effort="low")
    assert r.choices[0].message.content.startswith("Answer: ")
    assert r.usage.completion_tokens_details.reasoning_tokens == 128
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    chunks = list(client.chat.completions.create(model="mock-fast", messages=msgs("sdk?"), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 16
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Answer: ")
    assert [m.id for m in client.models.list()][:1] == ["mock-fast"]
    srv.fault("429")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="mock-fast", messages=msgs("x"))
    srv.fault("503")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="mock-fast", messages=msgs("x"))


def test_process_mode_serves_too():
    with MockServer(MockSettings(completion_tokens=4), mode="process") as m:
        r = post(m, {"model": "mock-fast", "messages": msgs("x")})
        assert r.json()["usage"]["completion_tokens"] == 4
        assert m.stats()["total"] == 1
