"""The HTTP surface as a user sees it: the official openai SDK against a live proxy."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.router.conftest import Proxy

HELLO = [{"role": "user", "content": "hi, what's the weather like?"}]


def assert_error_shape(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code is not None:
        assert err["code"] == code
    assert r.headers.get("x-request-id")
    return err


def test_non_streaming_answer_through_sdk(proxy: Proxy) -> None:
    client = proxy.client()
    raw = client.chat.completions.with_raw_response.create(model="triage/auto", messages=HELLO)
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert raw.headers["x-triage-tier"] in ("fast", "reasoning", "deliberate")
    assert float(raw.headers["x-triage-cost-usd"]) > 0
    assert raw.headers["x-request-id"]


def test_streaming_answer_and_usage_only_when_asked(proxy: Proxy) -> None:
    client = proxy.client()
    chunks = list(client.chat.completions.create(model="triage/fast", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.usage is None for c in chunks), "usage must not be forwarded unless asked"

    chunks = list(client.chat.completions.create(model="triage/fast", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage.completion_tokens > 0
    assert usage_chunks[0].model_extra is not None or usage_chunks[0].usage.model_extra.get("cost", 0) > 0
    # the upstream was always asked for usage, whatever the client asked
    last = proxy.mock.stats()["last"][-1]["body"]
    assert last["stream_options"]["include_usage"] is True


async def test_async_client_concurrent(proxy: Proxy) -> None:
    client = proxy.async_client()
    results = await asyncio.gather(*[
        client.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": f"q{i}"}])
        for i in range(20)
    ])
    assert len({r.id for r in results}) == 20
    stream = await client.chat.completions.create(model="triage/fast", messages=HELLO, stream=True)
    parts = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert parts


def test_unknown_fields_pass_through(proxy: Proxy) -> None:
    client = proxy.client()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    client.chat.completions.create(model="small", messages=HELLO, tools=tools, tool_choice="auto", seed=7, user="u-1",
                                   response_format={"type": "json_object"}, extra_body={"top_k": 3})
    body = proxy.mock.stats()["last"][-1]["body"]
    assert body["tools"] == tools and body["tool_choice"] == "auto" and body["seed"] == 7 and body["user"] == "u-1"
    assert body["response_format"] == {"type": "json_object"} and body["top_k"] == 3
    assert body["model"] == "mock-small"


def test_models_list_and_get(proxy: Proxy) -> None:
    client = proxy.client()
    ids = {m.id for m in client.models.list()}
    assert {"triage/auto", "triage/fast", "triage/reasoning", "triage/deliberate", "small", "big", "reasoner"} <= ids
    assert client.models.retrieve("triage/auto").id == "triage/auto"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    with proxy.http() as c:
        r = c.get("/models", headers={"authorization": f"Bearer {proxy.master_key}"})
        assert r.status_code == 200 and r.json()["object"] == "list"
        r = c.post("/chat/completions", json={"model": "small", "messages": HELLO},
                   headers={"authorization": f"Bearer {proxy.master_key}"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_request_id_generated_client_id_echoed_apart(proxy: Proxy) -> None:
    with proxy.http() as c:
        r = c.get("/healthz", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"].startswith("req_")  # never the client's: it keys accounting
        assert r.headers["x-client-request-id"] == "abc-123"
        r = c.get("/healthz")
        assert r.headers["x-request-id"].startswith("req_")
        r = c.get("/nowhere", headers={"x-request-id": "bad id <script>"})
        assert r.headers["x-request-id"].startswith("req_")
        assert_error_shape(r, 404)


def test_health_and_ready(proxy: Proxy) -> None:
    with proxy.http() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["redis"] is True


# ---- every error status, OpenAI-shaped ------------------------------------

def test_400_invalid_json_and_schema(proxy: Proxy) -> None:
    auth = {"authorization": f"Bearer {proxy.master_key}", "content-type": "application/json"}
    with proxy.http() as c:
        assert_error_shape(c.post("/v1/chat/completions", content=b"{not json", headers=auth), 400, "invalid_json")
        assert_error_shape(c.post("/v1/chat/completions", content=b"[1,2]", headers=auth), 400)
        err = assert_error_shape(c.post("/v1/chat/completions", json={"model": "small"}, headers=auth), 400)
        assert err["param"] == "messages"
        err = assert_error_shape(c.post("/v1/chat/completions", json={"model": "small", "messages": [{"role": "wizard", "content": "x"}]}, headers=auth), 400)
        assert err["param"].startswith("messages.0")
    with pytest.raises(openai.BadRequestError):
        proxy.client().chat.completions.create(model="small", messages=[])
    with pytest.raises(openai.BadRequestError):
        proxy.client().chat.completions.create(model="small", messages=HELLO, max_tokens=-5)


def test_401_bad_key(proxy: Proxy) -> None:
    with pytest.raises(openai.AuthenticationError) as ei:
        proxy.client(api_key="sk-wrong").chat.completions.create(model="small", messages=HELLO)
    assert ei.value.status_code == 401
    with proxy.http() as c:
        assert_error_shape(c.post("/v1/chat/completions", json={"model": "small", "messages": HELLO}), 401, "invalid_api_key")


def test_404_unknown_model(proxy: Proxy) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        proxy.client().chat.completions.create(model="gpt-17", messages=HELLO)
    assert ei.value.body["code"] == "model_not_found" and ei.value.body["param"] == "model"


def test_413_body_too_large(proxy: Proxy) -> None:
    big = "x" * (300 * 1024)
    with pytest.raises(openai.APIStatusError) as ei:
        proxy.client().chat.completions.create(model="small", messages=[{"role": "user", "content": big}])
    assert ei.value.status_code == 413
    with proxy.http() as c:  # chunked upload without content-length is cut off too
        def gen():
            yield b'{"model":"small","messages":[{"role":"user","content":"'
            for _ in range(40):
                yield b"y" * 8192
            yield b'"}]}'
        r = c.post("/v1/chat/completions", content=gen(), headers={"authorization": f"Bearer {proxy.master_key}"})
        assert_error_shape(r, 413, "request_too_large")


def test_429_budget_refusal_is_final(proxy: Proxy) -> None:
    key = proxy.create_key("tiny", budget_usd=0.0000001, period="day")
    client = proxy.client(api_key=key)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="small", messages=HELLO)
    e = ei.value
    assert e.body["code"] == "budget_exceeded" and e.body["type"] == "budget_exceeded"
    assert e.response.headers["x-should-retry"] == "false"
    assert "remain" in e.body["message"]


def test_502_upstream_5xx_after_fallbacks(proxy: Proxy) -> None:
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": "*", "fault": "500", "count": 100})
    with pytest.raises(openai.APIStatusError) as ei:
        proxy.client().chat.completions.create(model="triage/fast", messages=HELLO)
    assert ei.value.status_code == 502
    assert ei.value.body["type"] == "upstream_error"


def test_429_upstream_rate_limit(proxy: Proxy) -> None:
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": "*", "fault": "429", "count": 100, "retry_after": 1})
    with pytest.raises(openai.RateLimitError) as ei:
        proxy.client().chat.completions.create(model="small", messages=HELLO)
    assert ei.value.status_code == 429
    assert ei.value.body["code"] == "upstream_rate_limited"


def test_504_upstream_timeout(proxy: Proxy, tmp_path) -> None:
    from tests.router.conftest import make_config

    cfg = make_config(proxy.mock.base_url, proxy.redis_url)
    for m in cfg["model_list"]:
        m["litellm_params"]["timeout"] = 0.3
    proxy.rewrite_config(cfg)
    assert proxy.reload().status_code == 200
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": "*", "fault": "timeout", "count": 100})
    with pytest.raises(openai.APIStatusError) as ei:
        proxy.client(timeout=30).chat.completions.create(model="small", messages=HELLO)
    assert ei.value.status_code == 504
    assert ei.value.body["code"] == "upstream_timeout"


def test_midstream_disconnect_reported_in_band(proxy: Proxy) -> None:
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": "mock-small", "fault": "disconnect", "count": 100})
    stream = proxy.client().chat.completions.create(model="small", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError) as ei:
        for _ in stream:
            pass
    assert "disconnect" in str(ei.value).lower() or "upstream" in str(ei.value).lower()


def test_keys_and_prompts_never_logged(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    key = proxy.create_key("quiet")
    secret_prompt = "my-secret-prompt-text-4242"
    client = proxy.client(api_key=key)
    client.chat.completions.create(model="triage/auto", messages=[{"role": "user", "content": secret_prompt}])
    with httpx.Client() as c:  # an upstream failure path logs too
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": "*", "fault": "500", "count": 100})
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": secret_prompt}])
    with pytest.raises(openai.AuthenticationError):
        proxy.client(api_key="sk-leaky-1234567890").chat.completions.create(model="small", messages=HELLO)
    # the test's own openai/httpx clients log request bodies at DEBUG; only the server side is under test
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records
                      if not r.name.startswith(("openai", "httpx", "httpcore")))
    assert key not in text and "sk-leaky-1234567890" not in text and proxy.master_key not in text
    assert secret_prompt not in text and "sk-upstream" not in text


def test_stream_failing_before_first_byte_gets_a_real_status(proxy: Proxy) -> None:
    with httpx.Client() as c:
        c.post(proxy.mock.root_url + "/_mock/faults", json={"model": "*", "fault": "503", "count": 100})
    with pytest.raises(openai.APIStatusError) as ei:
        for _ in proxy.client().chat.completions.create(model="triage/fast", messages=HELLO, stream=True):
            pass
    assert ei.value.status_code == 502 and ei.value.body["type"] == "upstream_error"
