"""Simulated OpenAI-compatible (and minimal Anthropic) provider: ``triage mock-upstream``.

Deterministic token counts, prompt caching, reasoning tokens and answers are
defined in :mod:`simulator.model` (formulas in its docstring). This module is
the raw ASGI server around it; it is the upstream in benchmarks, so it avoids
framework routing and serialises with orjson / byte templates.

Endpoints
    POST /v1/chat/completions, /chat/completions   non-stream and SSE stream
    POST /v1/messages                              Anthropic Messages (stream too)
    GET  /v1/models, /models, /health

Per-request headers (all optional)
    x-mock-latency-ms         minimum total response time
    x-mock-ttft-ms            delay before the first content chunk
    x-mock-itl-ms             delay between content chunks
    x-mock-completion-tokens  visible completion tokens
    x-mock-fault              see faults below
Non-stream responses take max(latency, ttft + itl * (visible - 1)); streams
send headers at once, wait ttft, then itl between content chunks, then pad to
latency before the final chunk. ``model_overrides`` in settings sets the same
knobs per model (keys: latency_ms, ttft_ms, itl_ms, completion_tokens).

Faults (header ``x-mock-fault`` or the control API)
    500/502/503/<any 4xx-5xx>  that status with an OpenAI-shaped error body
    429         rate limited, ``retry-after: <retry_after>`` (default 1)
    timeout     hang until the client goes away (or ``hang_s``), then 504
    disconnect  stream: k chunks then drop the connection (no terminating
                chunk, no [DONE]); non-stream: partial body, then drop
    truncate    stream: k chunks then a clean end without finish/[DONE]
    stall       stream: k chunks then hang (exercises idle timeouts)
    malformed   non-stream: 200 with invalid JSON; stream: an invalid data event
    json_stream answer a stream request with a plain JSON completion
    error_event stream: k chunks then ``data: {"error": {..., "code": 500}}``;
                non-stream: 200 with an ``{"error": ...}`` body
k = ``after_chunks`` of the fault rule, else header x-mock-after-chunks, else
``disconnect_after_chunks`` (default 2).

Control API
    POST   /_mock/faults   {"model": "name|*", "fault": "...", "count": N,
                            "retry_after": 1, "after_chunks": k} (or a list);
                           the next N requests for that model fail.
    GET    /_mock/faults   pending rules.       DELETE /_mock/faults  clear.
    GET    /_mock/stats    {"total", "requests": {model: n}, "paths",
                            "faults_injected", "last": [records],
                            "last_by_model": {model: record}}; a record is
                           {"path", "model", "body", "headers" (no auth),
                            "api_key_sha256" (first 16 hex of sha256 or null)}.
    GET/POST /_mock/settings  read / merge-update MockSettings fields.
    POST   /_mock/reset    clear stats, faults, prompt cache; restore settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulator import difficulty as dm
from simulator import model as mm
from router.http.sse import DONE_EVENT

_loads = orjson.loads
_dumps = orjson.dumps
JSON_CT = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
DEFAULT_MODELS = ["mock-fast", "mock-mini", "mock-reasoner", "gpt-4o-mini", "o3-mini"]
_STREAM_FAULTS = ("disconnect", "truncate", "stall")
_OTHER_FAULTS = ("timeout", "malformed", "json_stream", "error_event")
_ERROR_OBJ = b'{"message":"mock: upstream error","type":"server_error","param":null,"code":500}'


@dataclass
class MockSettings:
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    completion_tokens: int = 16
    disagreement: float = 0.25
    difficulty: bool = False          # per-question difficulty model (simulator/difficulty.py)
    model_skill: dict[str, float] = field(default_factory=dict)
    reasoning_models: list[str] = field(default_factory=list)
    prompt_cache: bool = True
    cache_min_tokens: int = 256
    hang_s: float = 300.0
    disconnect_after_chunks: int = 2
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    model_overrides: dict[str, dict[str, float]] = field(default_factory=dict)
    keep_bodies: int = 100


class MockState:
    """Mutable server state; shared with the test process in thread mode."""

    def __init__(self, settings: MockSettings):
        self.initial = dataclasses.replace(settings)
        self.settings = settings
        self.cache = mm.PromptCache(min_tokens=settings.cache_min_tokens)
        self.ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.settings = dataclasses.replace(self.initial)
        self.cache.clear()
        self.cache.min_tokens = self.settings.cache_min_tokens
        self.faults: list[dict[str, Any]] = []
        self.total = 0
        self.requests: dict[str, int] = {}
        self.paths: dict[str, int] = {}
        self.faults_injected: dict[str, int] = {}
        self.last: deque[dict[str, Any]] = deque(maxlen=self.settings.keep_bodies)
        self.last_by_model: dict[str, dict[str, Any]] = {}

    def record(self, path: str, model: str, body: Any, headers: dict[str, str], auth: str | None) -> None:
        self.total += 1
        self.requests[model] = self.requests.get(model, 0) + 1
        self.paths[path] = self.paths.get(path, 0) + 1
        rec = {
            "path": path,
            "model": model,
            "body": body,
            "headers": headers,
            "api_key_sha256": hashlib.sha256(auth.encode()).hexdigest()[:16] if auth else None,
        }
        self.last.append(rec)
        self.last_by_model[model] = rec

    def take_fault(self, model: str) -> dict[str, Any] | None:
        for i, rule in enumerate(self.faults):
            if rule["model"] in ("*", model):
                rule["count"] -= 1
                if rule["count"] <= 0:
                    del self.faults[i]
                return rule
        return None

    def update_settings(self, patch: dict[str, Any]) -> None:
        names = {f.name for f in dataclasses.fields(MockSettings)}
        bad = set(patch) - names
        if bad:
            raise ValueError(f"unknown settings: {sorted(bad)}")
        self.settings = dataclasses.replace(self.settings, **patch)
        self.cache.min_tokens = self.settings.cache_min_tokens
        if self.last.maxlen != self.settings.keep_bodies:
            self.last = deque(self.last, maxlen=self.settings.keep_bodies)

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "requests": self.requests,
            "paths": self.paths,
            "faults_injected": self.faults_injected,
            "last": list(self.last),
            "last_by_model": self.last_by_model,
        }


# ---------------------------------------------------------------- ASGI plumbing


async def read_body(receive: Any) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def respond(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [JSON_CT, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def wait_disconnect(receive: Any, limit: float) -> None:
    """Hang like a stuck upstream, but stop as soon as the client gives up."""
    async def _until_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(_until_gone(), limit)
    except asyncio.TimeoutError:
        pass


def openai_error(status: int, message: str, etype: str = "server_error") -> bytes:
    return _dumps({"error": {"message": message, "type": etype, "param": None, "code": str(status)}})


async def send_fault_status(send: Any, fault: str, rule: dict[str, Any], anthropic: bool) -> None:
    status = 429 if fault == "429" else int(fault)
    extra = None
    if status == 429:
        etype = "rate_limit_error" if anthropic else "rate_limit_exceeded"
        msg = "mock: rate limited"
        extra = [(b"retry-after", str(rule.get("retry_after", 1)).encode())]
    else:
        etype = "api_error" if anthropic else ("server_error" if status >= 500 else "invalid_request_error")
        msg = f"mock: injected {status}"
    if anthropic:
        body = _dumps({"type": "error", "error": {"type": etype, "message": msg}})
    else:
        body = openai_error(status, msg, etype)
    await respond(send, status, body, extra)


def knob(state: MockState, model: str, hdr: dict[str, str], name: str) -> float:
    v = hdr.get("x-mock-" + name.replace("_", "-"))
    if v is not None:
        return float(v)
    ov = state.settings.model_overrides.get(model)
    if ov and name in ov:
        return float(ov[name])
    return float(getattr(state.settings, name))


class Plan:
    """Everything needed to render one response, computed once per request."""

    __slots__ = ("model", "prompt", "cached", "visible", "reasoning", "finish", "pieces", "lps",
                 "latency", "ttft", "itl", "fault", "rule", "after", "tool_calls", "n")

    def __init__(self, state: MockState, model: str, messages: list[Any], body: dict[str, Any],
                 hdr: dict[str, str], prefix: list[Any] | None = None) -> None:
        s = state.settings
        self.model = model
        msgs = (prefix + messages) if prefix else messages
        self.prompt, per = mm.prompt_tokens_for(msgs, body.get("tools"))
        self.cached = state.cache.lookup_and_store(model, msgs, per) if s.prompt_cache else 0
        cap = body.get("max_completion_tokens")
        if cap is None:
            cap = body.get("max_tokens")
        self.visible, self.reasoning, self.finish = mm.plan_completion(
            visible=int(knob(state, model, hdr, "completion_tokens")),
            reasoning_model=mm.is_reasoning_model(model, set(s.reasoning_models)),
            effort=body.get("reasoning_effort"),
            cap=int(cap) if cap is not None else None,
        )
        question = mm.last_user_text(messages)
        if s.difficulty:
            self.pieces, lps = dm.pieces_and_logprobs(model, msgs, body, self.visible, s.model_skill, question)
        else:
            self.pieces = mm.content_for(model, question, self.visible, s.disagreement, dm.sample_key(body))
            lps = [-0.001 if i < 2 else -0.05 for i in range(len(self.pieces))]
        self.lps = lps if body.get("logprobs") else None
        n = body.get("n")
        self.n = n if isinstance(n, int) and n > 1 else 1
        self.tool_calls = mm.tool_calls_for(model, messages, body, s.disagreement)
        if self.tool_calls:
            self.pieces, self.lps = [], None
            self.visible = mm.tool_call_tokens(self.tool_calls)
            self.finish = "tool_calls"
        else:
            js = mm.structured_content(model, question, body.get("response_format"), s.disagreement)
            if js is not None:
                self.pieces = mm.pieces_of(js)
                self.lps = [-0.01] * len(self.pieces) if body.get("logprobs") else None
                self.visible = (len(js) + 3) // 4
                self.finish = "stop"
        self.latency = knob(state, model, hdr, "latency_ms") / 1000
        self.ttft = knob(state, model, hdr, "ttft_ms") / 1000
        self.itl = knob(state, model, hdr, "itl_ms") / 1000
        fault = hdr.get("x-mock-fault")
        rule: dict[str, Any] = {}
        if fault is None:
            r = state.take_fault(model)
            if r is not None:
                fault, rule = r["fault"], r
        self.fault = fault
        self.rule = rule
        after = rule.get("after_chunks") or hdr.get("x-mock-after-chunks")
        self.after = int(after) if after is not None else s.disconnect_after_chunks
        if fault:
            state.faults_injected[fault] = state.faults_injected.get(fault, 0) + 1

    def total_delay(self) -> float:
        return max(self.latency, self.ttft + self.itl * max(0, len(self.pieces) - 1))

    def usage(self) -> dict[str, Any]:
        comp = (self.visible + self.reasoning) * self.n  # n choices: each is generated, each is billed
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": comp,
            "total_tokens": self.prompt + comp,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


# ---------------------------------------------------------------- OpenAI chat


async def chat_completions(state: MockState, body: dict[str, Any], plan: Plan, receive: Any, send: Any) -> None:
    fault = plan.fault
    stream = bool(body.get("stream"))
    if fault:
        if fault.isdigit():
            return await send_fault_status(send, fault, plan.rule, False)
        if fault == "json_stream":
            stream = False
        if fault == "error_event" and not stream:
            return await respond(send, 200, b'{"error":' + _ERROR_OBJ + b"}")
        if fault == "timeout" or (fault == "stall" and not stream):
            await wait_disconnect(receive, state.settings.hang_s)
            return await respond(send, 504, openai_error(504, "mock: timed out"))
        if fault == "malformed" and not stream:
            return await respond(send, 200, b'{"id": "chatcmpl-mock", "choices": [{"index": 0, "mess')
        if fault in ("disconnect", "truncate") and not stream:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [JSON_CT, (b"content-length", b"4096")]})
            await send({"type": "http.response.body", "body": b'{"id": "chatcmpl-mock", "cho', "more_body": True})
            return  # returning with the response incomplete makes uvicorn drop the connection
    cid = f"chatcmpl-mock{next(state.ids)}"
    created = int(time.time())
    if not stream:
        delay = plan.total_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        resp = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": plan.model,
            "system_fingerprint": "fp_mock",
            "choices": [{
                "index": i,
                "message": ({"role": "assistant", "content": None, "tool_calls": plan.tool_calls, "refusal": None}
                            if plan.tool_calls else
                            {"role": "assistant", "content": "".join(plan.pieces), "refusal": None}),
                "logprobs": ({"content": dm.logprobs_content(plan.pieces, plan.lps), "refusal": None}
                             if plan.lps is not None else None),
                "finish_reason": plan.finish,
            } for i in range(plan.n)],
            "usage": plan.usage(),
        }
        return await respond(send, 200, _dumps(resp))
    await stream_chat(state, body, plan, cid, created, receive, send)


async def stream_chat(state: MockState, body: dict[str, Any], plan: Plan, cid: str, created: int,
                      receive: Any, send: Any) -> None:
    so = body.get("stream_options")
    include_usage = isinstance(so, dict) and bool(so.get("include_usage"))
    head = (b'data: {"id":"' + cid.encode() + b'","object":"chat.completion.chunk","created":'
            + str(created).encode() + b',"model":' + _dumps(plan.model)
            + b',"system_fingerprint":"fp_mock","choices":[{"index":0,"delta":')
    tail = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"
    events = [head + b'{"role":"assistant","content":""}' + tail]
    if plan.tool_calls:
        # as OpenAI streams them: id and name first, then the arguments in pieces, one call after another
        events = [head + b'{"role":"assistant","content":null}' + tail]
        for i, tc in enumerate(plan.tool_calls):
            fn = tc["function"]
            events.append(head + b'{"tool_calls":' + _dumps([{"index": i, "id": tc["id"], "type": "function",
                          "function": {"name": fn["name"], "arguments": ""}}]) + b"}" + tail)
            events.extend(head + b'{"tool_calls":' + _dumps([{"index": i, "function": {"arguments": p}}]) + b"}" + tail
                          for p in mm.pieces_of(fn["arguments"]))
    elif plan.lps is None:
        events.extend(head + b'{"content":' + _dumps(p) + b"}" + tail for p in plan.pieces)
    else:
        lp_entries = dm.logprobs_content(plan.pieces, plan.lps)
        events.extend(head + b'{"content":' + _dumps(p) + b'},"logprobs":{"content":[' + _dumps(e) + b"]}"
                      + tail[len(b',"logprobs":null'):] for p, e in zip(plan.pieces, lp_entries))
    final = [head + b'{},"logprobs":null,"finish_reason":"' + plan.finish.encode() + b'"}]'
             + (b',"usage":null' if include_usage else b"") + b"}\n\n"]
    if plan.n > 1:  # choice after choice, each with its index
        idx0 = b'"index":0,"delta"'
        events = events + [e.replace(idx0, b'"index":%d,"delta"' % i) for i in range(1, plan.n) for e in events]
        final = final + [final[0].replace(idx0, b'"index":%d,"delta"' % i) for i in range(1, plan.n)]
    if include_usage:
        final.append(b'data: {"id":"' + cid.encode() + b'","object":"chat.completion.chunk","created":'
                     + str(created).encode() + b',"model":' + _dumps(plan.model)
                     + b',"system_fingerprint":"fp_mock","choices":[],"usage":' + _dumps(plan.usage()) + b"}\n\n")
    final.append(DONE_EVENT)
    if plan.fault == "error_event":
        events = events[:plan.after]
        final = [b'data: {"error":' + _ERROR_OBJ + b"}\n\n"]
    await run_stream(state, plan, events, final, b'data: {"id": "chatcmpl-mock", "choices": [{"de\n\n', receive, send)


async def run_stream(state: MockState, plan: Plan, events: list[bytes], final: list[bytes],
                     malformed: bytes, receive: Any, send: Any) -> None:
    """Send ``events`` (first = role/start, rest = one per content token) then ``final``."""
    fault = plan.fault
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    if fault == "malformed":
        await send({"type": "http.response.body", "body": events[0] + malformed, "more_body": True})
        await send({"type": "http.response.body", "body": b"".join(final)})
        return
    start = time.monotonic()
    if fault in _STREAM_FAULTS:
        k = plan.after
        for ev in events[:k]:
            await send({"type": "http.response.body", "body": ev, "more_body": True})
        if fault == "stall":
            await wait_disconnect(receive, state.settings.hang_s)
        if fault == "truncate" or fault == "stall":
            await send({"type": "http.response.body", "body": b""})
        return  # "disconnect": incomplete response -> uvicorn closes the socket
    if plan.ttft > 0:
        await asyncio.sleep(plan.ttft)
    if plan.itl <= 0:
        # no pacing requested: one write keeps the mock off the benchmark's critical path
        head = b"".join(events)
    else:
        await send({"type": "http.response.body", "body": events[0] + events[1] if len(events) > 1 else events[0],
                    "more_body": True})
        for ev in events[2:]:
            await asyncio.sleep(plan.itl)
            await send({"type": "http.response.body", "body": ev, "more_body": True})
        head = b""
    rest = plan.latency - (time.monotonic() - start)
    if rest > 0:
        if head:
            await send({"type": "http.response.body", "body": head, "more_body": True})
            head = b""
        await asyncio.sleep(rest)
    await send({"type": "http.response.body", "body": head + b"".join(final)})


# ---------------------------------------------------------------- app


def _headers(scope: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    hdr: dict[str, str] = {}
    auth = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            s = v.decode("latin-1")
            auth = s[7:] if s[:7].lower() == "bearer " else s
        elif k == b"x-api-key" or k == b"api-key":
            auth = v.decode("latin-1")
        else:
            hdr[k.decode("latin-1")] = v.decode("latin-1")
    return hdr, auth


def build_app(settings: MockSettings | None = None) -> Any:
    """The raw ASGI app. ``app.state`` is the :class:`MockState`."""
    state = MockState(settings or MockSettings())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        method = scope["method"]
        if method == "POST" and (path == "/v1/chat/completions" or path == "/chat/completions"
                                 or path == "/v1/messages"):
            raw = await read_body(receive)
            try:
                body = _loads(raw)
                model = body["model"]
                messages = body["messages"]
                if not isinstance(messages, list) or not isinstance(model, str):
                    raise TypeError
            except Exception:
                return await respond(send, 400, openai_error(400, "mock: invalid request body", "invalid_request_error"))
            hdr, auth = _headers(scope)
            state.record(path, model, body, hdr, auth)
            try:
                if path == "/v1/messages":
                    system = body.get("system")
                    prefix = [{"role": "system", "content": system}] if system else None
                    plan = Plan(state, model, messages, body, hdr, prefix)
                    return await anthropic_messages(state, body, plan, receive, send)
                plan = Plan(state, model, messages, body, hdr)
            except (TypeError, ValueError) as e:
                return await respond(send, 400, openai_error(400, f"mock: {e}", "invalid_request_error"))
            return await chat_completions(state, body, plan, receive, send)
        if path.startswith("/_mock/"):
            return await control(state, method, path, receive, send)
        if method == "GET" and path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "triage-mock"} for m in state.settings.models]
            return await respond(send, 200, _dumps({"object": "list", "data": data}))
        if method == "GET" and path == "/health":
            return await respond(send, 200, b'{"status":"ok"}')
        await respond(send, 404, openai_error(404, f"mock: no route {method} {path}", "invalid_request_error"))

    app.state = state  # type: ignore[attr-defined]
    return app


async def control(state: MockState, method: str, path: str, receive: Any, send: Any) -> None:
    raw = await read_body(receive) if method in ("POST", "PUT", "PATCH") else b""
    try:
        payload = _loads(raw) if raw else {}
        if path == "/_mock/faults":
            if method == "DELETE":
                state.faults.clear()
            elif method == "POST":
                for r in payload if isinstance(payload, list) else [payload]:
                    fault = str(r["fault"])
                    if not (fault.isdigit() or fault in _OTHER_FAULTS + _STREAM_FAULTS):
                        raise ValueError(f"unknown fault {fault!r}")
                    state.faults.append({
                        "model": r.get("model", "*"), "fault": fault, "count": int(r.get("count", 1)),
                        "retry_after": r.get("retry_after", 1), "after_chunks": r.get("after_chunks"),
                    })
            return await respond(send, 200, _dumps({"faults": state.faults}))
        if path == "/_mock/truth" and method == "POST":
            return await respond(send, 200, _dumps(truth(state, payload)))
        if path == "/_mock/stats" and method == "GET":
            return await respond(send, 200, _dumps(state.stats()))
        if path == "/_mock/reset" and method == "POST":
            state.reset()
            return await respond(send, 200, b'{"ok":true}')
        if path == "/_mock/settings":
            if method == "POST":
                state.update_settings(payload)
            return await respond(send, 200, _dumps(dataclasses.asdict(state.settings)))
    except (KeyError, ValueError, TypeError) as e:
        return await respond(send, 400, openai_error(400, f"mock control: {e}", "invalid_request_error"))
    await respond(send, 404, openai_error(404, f"mock: no route {method} {path}", "invalid_request_error"))


def truth(state: MockState, payload: dict[str, Any]) -> dict[str, Any]:
    """What the difficulty model knows about one question for one model (see simulator/difficulty.py)."""
    model = payload["model"]
    if not isinstance(model, str):
        raise TypeError("model must be a string")
    question = payload.get("question")
    if question is None:
        question = mm.last_user_text(payload["messages"])
    if not isinstance(question, str):
        raise TypeError("question must be a string")
    return dm.judge(model, question, state.settings.model_skill, dm.sample_key(payload)).as_dict()


# Imported last: these modules use the helpers above (circular by design, so the
# public API stays ``from simulator.app import build_app, serve, MockServer``).
from simulator.anthropic import anthropic_messages  # noqa: E402
from simulator.server import MockServer, serve  # noqa: E402,F401
