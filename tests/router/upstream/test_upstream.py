"""Upstream client against the mock: pass-through, streaming, every failure kind, litellm path."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from email.utils import formatdate

import pytest

from router.http.sse import SSEDecoder, encode
from router.upstream import Deployment, Upstream, UpstreamError, http_error, parse_retry_after
from simulator.server import MockServer
from simulator.state import MockSettings

KEY = "sk-very-secret-key-123"


@pytest.fixture(scope="module")
def mock():
    with MockServer(MockSettings(hang_s=10)) as m:
        yield m


@pytest.fixture()
def srv(mock: MockServer):
    mock.reset()
    return mock


@pytest.fixture()
def dep(srv: MockServer) -> Deployment:
    return Deployment(name="fast", model="mock-fast", api_base=srv.base_url, api_key=KEY, timeout=2,
                      stream_idle_timeout=0.5, headers={"x-team": "triage"})


def req(text: str = "What is 6*7?", **extra) -> dict:
    return {"model": "triage/auto", "messages": [{"role": "user", "content": text}], **extra}


async def collect(up: Upstream, dep: Deployment, body: dict) -> tuple[list[dict], UpstreamError | None]:
    got: list[dict] = []
    try:
        async with contextlib.aclosing(up.stream(dep, body)) as it:
            async for c in it:
                got.append(c)
    except UpstreamError as e:
        return got, e
    return got, None


async def test_complete_swaps_model_and_passes_everything_else(up, dep, srv):
    # tool_choice none / text format: the simulator answers in text, so the usage check below holds
    body = req(seed=5, user="u1", metadata={"k": "v"}, response_format={"type": "text"},
               tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
               tool_choice="none", max_tokens=12, logit_bias={"1": 2}, future_param=[1, 2])
    r = await up.complete(dep, body)
    assert r["object"] == "chat.completion"
    assert r["usage"]["completion_tokens"] == 12
    assert r["choices"][0]["message"]["content"].startswith("Answer: ")
    rec = srv.stats()["last"][-1]
    sent = rec["body"]
    assert sent.pop("model") == "mock-fast"
    assert sent == {k: v for k, v in body.items() if k != "model"}
    assert body["model"] == "triage/auto"  # caller's dict is not mutated
    assert rec["headers"]["x-team"] == "triage"
    import hashlib

    assert rec["api_key_sha256"] == hashlib.sha256(KEY.encode()).hexdigest()[:16]


async def test_a_body_already_in_upstream_shape_is_sent_as_is_and_headers_are_complete(up, dep, srv):
    body = {"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    before = {**body}
    r = await up.complete(dep, body)
    assert r["object"] == "chat.completion"
    rec = srv.stats()["last"][-1]
    assert rec["body"] == before and body == before
    assert rec["headers"]["user-agent"] == "Triage"
    assert rec["headers"]["content-type"] == "application/json"
    # a configured user-agent replaces ours (header names are case-insensitive)
    own = Deployment(name="fast", model="mock-fast", api_base=srv.base_url, api_key=KEY, timeout=2,
                     headers={"User-Agent": "acme/1"})
    await up.complete(own, req())
    assert srv.stats()["last"][-1]["headers"]["user-agent"] == "acme/1"


async def test_complete_drops_stream_flags(up, dep, srv):
    await up.complete(dep, req(stream=True, stream_options={"include_usage": True}))
    sent = srv.stats()["last"][-1]["body"]
    assert sent["stream"] is False and "stream_options" not in sent


async def test_stream_forces_include_usage_and_keeps_other_options(up, dep, srv):
    chunks, err = await collect(up, dep, req(stream_options={"include_usage": False, "x": 1}, max_tokens=4))
    assert err is None
    sent = srv.stats()["last"][-1]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True, "x": 1}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" or chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Answer: " + text.split(": ")[1]


async def test_usage_details_come_through(up, srv):
    d = Deployment(name="r", model="o3-mini", api_base=srv.base_url, api_key=KEY)
    body = {"model": "r", "messages": [{"role": "system", "content": "z" * 1100}, {"role": "user", "content": "hi"}],
            "reasoning_effort": "low"}
    first = await up.complete(d, body)
    second = await up.complete(d, body)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == 256
    assert second["usage"]["completion_tokens_details"]["reasoning_tokens"] == 128
    assert srv.stats()["last"][-1]["body"]["reasoning_effort"] == "low"


@pytest.mark.parametrize("fault,kind,status,upstream_status,retryable", [
    ("500", "server_error", 502, 500, True),
    ("502", "server_error", 502, 502, True),
    ("503", "server_error", 502, 503, True),
    ("429", "rate_limited", 429, 429, True),
    ("timeout", "timeout", 504, None, True),
    ("malformed", "bad_response", 502, 200, False),
    ("disconnect", "disconnect", 502, None, True),  # nothing was delivered: safe to retry
    ("400", "client_error", 400, 400, False),
    ("404", "client_error", 404, 404, False),
])
async def test_complete_fault_mapping(up, dep, srv, fault, kind, status, upstream_status, retryable):
    srv.fault(fault, retry_after=3)
    t = time.perf_counter()
    with pytest.raises(UpstreamError) as ei:
        await up.complete(dep, req())
    e = ei.value
    assert (e.kind, e.status, e.upstream_status, e.retryable) == (kind, status, upstream_status, retryable)
    assert KEY not in str(e) and KEY not in repr(e)
    if fault == "429":
        assert e.retry_after == 3.0
    if fault == "timeout":
        assert time.perf_counter() - t > 1.9  # the configured timeout was waited for (no upper bound: bench/)
    # the pooled session is still healthy afterwards
    assert (await up.complete(dep, req()))["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("fault,kind,n_before", [
    ("disconnect", "disconnect", 2),
    ("truncate", "disconnect", 2),
    ("stall", "timeout", 2),
    ("malformed", "bad_response", 1),
    ("503", "server_error", 0),
    ("429", "rate_limited", 0),
])
async def test_stream_fault_mapping(up, dep, srv, fault, kind, n_before):
    srv.fault(fault)
    chunks, err = await collect(up, dep, req())
    assert err is not None and err.kind == kind
    assert len(chunks) == n_before
    assert err.partial is (n_before > 0)
    if n_before:
        assert not err.retryable or kind == "timeout"
    chunks, err = await collect(up, dep, req())
    assert err is None and chunks[-1]["usage"]


async def test_connect_error_and_closed_port(up):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Deployment(name="gone", model="m", api_base=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=2)
    with pytest.raises(UpstreamError) as ei:
        await up.complete(d, req())
    assert ei.value.kind == "connect" and ei.value.status == 502 and ei.value.retryable
    _, err = await collect(up, d, req())
    assert err is not None and err.kind == "connect"


def test_deployment_hides_key_and_scrubs_echoed_keys():
    d = Deployment(name="x", model="m", api_base="http://127.0.0.1:1/v1/", api_key=KEY)
    assert KEY not in repr(d)
    assert d.url == "http://127.0.0.1:1/v1/chat/completions"
    raw = ('{"error": {"message": "Incorrect API key provided: ' + KEY + '"}}').encode()
    e = http_error(d, 401, raw, {})
    assert e.kind == "client_error" and e.status == 401 and KEY not in e.message
    with pytest.raises(ValueError):
        Deployment(name="x", model="m", provider="bedrock")


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    d = parse_retry_after({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert d is not None and 25 < d <= 31


def test_sse_decoder_handles_split_frames_comments_and_crlf():
    wire = b": keep-alive\r\n\r\n" + encode({"a": 1}) + b"data: {\"b\":\ndata: 2}\n\n" + b"data: [DONE]\n\n"
    for step in (1, 3, 7, len(wire)):
        dec = SSEDecoder()
        out = []
        for i in range(0, len(wire), step):
            out += dec.feed(wire[i:i + step])
        out += dec.flush()
        assert out == [b'{"a":1}', b'{"b":\n2}', b"[DONE]"]
    dec = SSEDecoder()
    assert dec.feed(b"data: tail-without-blank-line") == []
    assert dec.flush() == [b"tail-without-blank-line"]


async def test_concurrent_requests_share_one_pool(up, dep, srv):
    rs = await asyncio.gather(*(up.complete(dep, req(f"q{i}")) for i in range(50)))
    assert len({r["id"] for r in rs}) == 50
    assert srv.stats()["total"] == 50


# ------------------------------------------------------------------ litellm path


@pytest.fixture()
def claude(srv: MockServer) -> Deployment:
    return Deployment(name="claude", model="anthropic/claude-3-5-sonnet-20241022", provider="litellm",
                      api_base=srv.root_url, api_key=KEY, timeout=5)


async def test_litellm_anthropic_complete_and_cached_usage(up, claude, srv):
    body = {"model": "claude", "max_tokens": 32, "messages": [{"role": "user", "content": "w" * 1200}]}
    r = await up.complete(claude, body)
    assert srv.stats()["last"][-1]["path"] == "/v1/messages"
    assert r["object"] == "chat.completion"
    assert r["choices"][0]["message"]["content"].startswith("Answer: ")
    assert r["usage"]["prompt_tokens"] == 300 + 4 + 3
    assert r["usage"]["completion_tokens"] == 16
    r2 = await up.complete(claude, body)
    assert r2["usage"]["prompt_tokens_details"]["cached_tokens"] == 256
    assert r2["usage"]["prompt_tokens"] == 307


async def test_litellm_anthropic_stream(up, claude, srv):
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "stream?"}]}
    chunks, err = await collect(up, claude, body)
    assert err is None
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("Answer: ")
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert srv.stats()["last"][-1]["body"]["stream"] is True


@pytest.mark.parametrize("fault,kind,status", [("429", "rate_limited", 429), ("503", "server_error", 502),
                                               ("400", "client_error", 400)])
async def test_litellm_errors_map_to_upstream_error(up, claude, srv, fault, kind, status):
    srv.fault(fault, retry_after=4)
    with pytest.raises(UpstreamError) as ei:
        await up.complete(claude, {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert (ei.value.kind, ei.value.status) == (kind, status)
    assert KEY not in str(ei.value)
    if fault == "429":
        assert ei.value.retry_after == 4.0


async def test_litellm_timeout(up, srv):
    d = Deployment(name="claude", model="anthropic/claude-x", provider="litellm", api_base=srv.root_url,
                   api_key=KEY, timeout=0.5)
    srv.fault("timeout")
    with pytest.raises(UpstreamError) as ei:
        await up.complete(d, {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert ei.value.kind == "timeout" and ei.value.status == 504


async def test_error_objects_and_json_answer_to_stream(up, dep, srv):
    srv.fault("error_event")
    with pytest.raises(UpstreamError) as ei:
        await up.complete(dep, req())
    assert ei.value.kind == "server_error" and ei.value.upstream_status == 500
    srv.fault("error_event", after_chunks=3)
    chunks, err = await collect(up, dep, req())
    assert len(chunks) == 3 and err is not None and err.kind == "server_error" and err.partial
    srv.fault("json_stream")
    chunks, err = await collect(up, dep, req(max_tokens=3))
    assert err is None
    assert chunks[0]["choices"][0]["delta"]["content"] == "Answer: " + chunks[0]["choices"][0]["delta"]["content"][8:]
    assert chunks[0]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_sends_json_content_type(up, dep, srv):
    await up.complete(dep, req())
    assert srv.stats()["last"][-1]["headers"]["content-type"] == "application/json"


@pytest.mark.parametrize("fault,kind", [("disconnect", "disconnect"), ("stall", "timeout")])
async def test_litellm_mid_stream_failures(up, srv, fault, kind):
    d = Deployment(name="claude", model="anthropic/claude-x", provider="litellm", api_base=srv.root_url,
                   api_key=KEY, timeout=0.7)
    srv.fault(fault)
    chunks, err = await collect(up, d, {"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]})
    assert err is not None and err.kind == kind and err.partial and chunks
    assert not err.retryable or kind == "timeout"
