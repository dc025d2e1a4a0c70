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
    timeout_after  generate the answer (billed, see ``billed``), then hang like ``timeout``
    disconnect  stream: k chunks then drop the connection (no terminating
                chunk, no [DONE]); non-stream: partial body, then drop
    truncate    stream: k chunks then a clean end without finish/[DONE]
    stall       stream: k chunks then hang (exercises idle timeouts)
    malformed   non-stream: 200 with invalid JSON (the answer was generated: billed); stream: an
                invalid data event
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
                            "last_by_model": {model: record}, "billed": [usage
                            of every chat answer generated, faults included, as a
                            provider would invoice it: {model, fault, prompt_tokens,
                            completion_tokens}]}; a record is
                           {"path", "model", "body", "headers" (no auth),
                            "api_key_sha256" (first 16 hex of sha256 or null)}.
    GET/POST /_mock/settings  read / merge-update MockSettings fields.
    POST   /_mock/reset    clear stats, faults, prompt cache; restore settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import orjson

from router.http.sse import DONE_EVENT
from simulator import difficulty as dm
from simulator import model as mm
from simulator.anthropic import anthropic_messages
from simulator.state import DEFAULT_MODELS, MockSettings, MockState
from simulator.wire import (
    _ERROR_OBJ,
    _OTHER_FAULTS,
    _STREAM_FAULTS,
    JSON_CT,
    Plan,
    openai_error,
    read_body,
    respond,
    run_stream,
    send_fault_status,
    wait_disconnect,
)

__all__ = ["DEFAULT_MODELS", "MockSettings", "MockState", "Plan", "build_app"]

_loads = orjson.loads
_dumps = orjson.dumps



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
        if fault in ("timeout_after", "malformed") or (fault in ("disconnect", "truncate") and not stream):
            state.bill(plan, fault)  # generated before it failed: a provider invoices it
        if fault in ("timeout", "timeout_after") or (fault == "stall" and not stream):
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
    if not fault or fault in ("json_stream",):
        state.bill(plan, None)
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
        if method == "POST" and path in ("/v1/embeddings", "/embeddings"):
            raw = await read_body(receive)
            try:
                body = _loads(raw)
                model, inp = body["model"], body["input"]
                dim = body.get("dimensions")
                if not isinstance(model, str) or (dim is not None and (not isinstance(dim, int) or dim < 1)):
                    raise TypeError
            except Exception:
                return await respond(send, 400, openai_error(400, "mock: invalid embeddings body", "invalid_request_error"))
            hdr, auth = _headers(scope)
            state.record(path, model, body, hdr, auth)
            fault = hdr.get("x-mock-fault")
            if fault is None:
                r = state.take_fault(model)
                fault = r["fault"] if r is not None else None
            if fault and fault.isdigit():
                return await send_fault_status(send, fault, {}, False)
            return await respond(send, 200, _dumps(mm.embeddings_response(model, inp, dim)))
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
