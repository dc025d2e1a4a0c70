"""POST /v1/messages: Anthropic's Messages API in, the chat pipeline through, Anthropic's shape out.

Accepts what Claude Code and Anthropic SDK users send: `system` (text or
blocks), text / image / tool_use / tool_result content blocks, `tools` with
`input_schema`, `tool_choice` (auto / any / tool / none), `stop_sequences`,
`thinking` (mapped to a reasoning effort), and `stream` with Anthropic's
event sequence (message_start, content_block_*, message_delta, message_stop,
ping for keep-alives). Auth takes `x-api-key` as the SDK sends it. Errors
come back as `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response

from accounting.tokens import estimate_prompt_tokens
from router.http.asgi import SSEAnswer
from router.http.auth import authenticate
from router.http.chat import ChatHandler, read_json
from router.http.errors import ProxyError, bad_request
from router.http.sse import encode_event
from router.http.translate import KEEPALIVE, ToolCallAccumulator, chat_chunks, chat_json, sse, triage_headers

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
        "function_call": "tool_use"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               503: "overloaded_error", 529: "overloaded_error"}


def anthropic_error(e: ProxyError) -> Response:
    kind = ERROR_TYPES.get(e.status, "api_error" if e.status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": e.message}}
    headers = {k: v for k, v in (e.headers or {}).items()}
    return Response(orjson.dumps(body), status_code=e.status, media_type="application/json", headers=headers)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise bad_request("'content' must be a string or a list of content blocks.", param="messages")


def _image(block: dict[str, Any]) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    else:
        url = src.get("url", "")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return "" if content is None else orjson.dumps(content).decode()


def to_messages(raw: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = raw.get("system")
    if system:
        text = system if isinstance(system, str) else "".join(
            b.get("text", "") for b in system if isinstance(b, dict) and b.get("type") == "text")
        out.append({"role": "system", "content": text})
    msgs = raw.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ProxyError(400, "Missing required parameter: 'messages'.", "invalid_request_error", "missing_required_parameter", "messages")
    for m in msgs:
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise bad_request(f"messages: role must be 'user' or 'assistant' (got {role!r}).", param="messages")
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for b in _blocks(m.get("content")):
            t = b.get("type")
            if t == "text":
                parts.append({"type": "text", "text": b.get("text", "")})
            elif t == "image":
                parts.append(_image(b))
            elif t == "tool_use":
                calls.append({"id": b.get("id"), "type": "function", "function": {
                    "name": b.get("name"), "arguments": orjson.dumps(b.get("input") or {}).decode()}})
            elif t == "tool_result":
                # tool results answer the previous assistant turn, so they go before this turn's text
                out.append({"role": "tool", "tool_call_id": b.get("tool_use_id"),
                            "content": _tool_result_text(b.get("content"))})
            elif t in ("thinking", "redacted_thinking"):
                continue
            else:
                raise bad_request(f"Unsupported content block type '{t}'.", param="messages")
        if not parts and not calls:
            continue
        content: Any = "".join(p["text"] for p in parts) if all(p["type"] == "text" for p in parts) else parts
        msg: dict[str, Any] = {"role": role, "content": content if parts else None}
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def to_chat(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    if not isinstance(raw.get("max_tokens"), int):
        raise ProxyError(400, "Missing required parameter: 'max_tokens'.", "invalid_request_error",
                         "missing_required_parameter", "max_tokens")
    body: dict[str, Any] = {"model": raw.get("model"), "messages": to_messages(raw), "max_tokens": raw["max_tokens"]}
    for k in ("temperature", "top_p", "stream"):
        if raw.get(k) is not None:
            body[k] = raw[k]
    if raw.get("stop_sequences"):
        body["stop"] = raw["stop_sequences"]
    uid = (raw.get("metadata") or {}).get("user_id") if isinstance(raw.get("metadata"), dict) else None
    if isinstance(uid, str):
        body["user"] = uid
    if body.get("stream"):
        body["stream_options"] = {"include_usage": True}
    tools = [{"type": "function", "function": {"name": t.get("name"), "description": t.get("description", ""),
                                               "parameters": t.get("input_schema") or {"type": "object"}}}
             for t in raw.get("tools") or () if isinstance(t, dict) and t.get("name")]
    if tools:
        body["tools"] = tools
    tc = raw.get("tool_choice")
    if isinstance(tc, dict):
        kind = tc.get("type")
        if kind == "any":
            body["tool_choice"] = "required"
        elif kind == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": tc.get("name")}}
        elif kind in ("auto", "none"):
            body["tool_choice"] = kind
        if tc.get("disable_parallel_tool_use"):
            body["parallel_tool_calls"] = False
    th = raw.get("thinking")
    if isinstance(th, dict) and th.get("type") == "enabled":
        budget = int(th.get("budget_tokens") or 0)
        body["reasoning_effort"] = "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
    return body


def _usage(u: dict[str, Any] | None) -> dict[str, Any]:
    u = u or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) or 0
    return {"input_tokens": max(u.get("prompt_tokens", 0) - cached, 0), "output_tokens": u.get("completion_tokens", 0),
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _args(text: str) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"_raw": text}


async def count_tokens(request: Request, chat: ChatHandler) -> Response:
    """POST /v1/messages/count_tokens (Claude Code asks before long requests): the prompt-token estimate
    Triage budgets with; authenticated, not billed."""
    try:
        await authenticate(request, chat.state)
        raw = await read_json(request, chat.state.snapshot.config.server.max_body_bytes)
        if not isinstance(raw, dict):
            raise bad_request("Request body must be a JSON object.", code="invalid_json")
        body = to_chat({**raw, "max_tokens": 1})
    except ProxyError as e:
        return anthropic_error(e)
    n = estimate_prompt_tokens(body["messages"], body.get("tools"))
    return Response(orjson.dumps({"input_tokens": n}), media_type="application/json")


async def messages(request: Request, chat: ChatHandler) -> Response | SSEAnswer:
    try:
        raw = await read_json(request, chat.state.snapshot.config.server.max_body_bytes)
        body = to_chat(raw)
        resp = await chat(request, body)
    except ProxyError as e:
        return anthropic_error(e)
    headers = triage_headers(resp)
    mid = "msg_" + request.scope["triage.request_id"].removeprefix("req_")
    model = raw.get("model")
    if not body.get("stream"):
        c = chat_json(resp)
        ch = (c.get("choices") or [{}])[0]
        msg = ch.get("message") or {}
        content: list[dict[str, Any]] = []
        if msg.get("content"):
            content.append({"type": "text", "text": msg["content"]})
        for tc in msg.get("tool_calls") or ():
            fn = tc.get("function") or {}
            content.append({"type": "tool_use", "id": tc.get("id"), "name": fn.get("name"),
                            "input": _args(fn.get("arguments") or "")})
        out = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
               "stop_reason": STOP.get(ch.get("finish_reason") or "stop", "end_turn"), "stop_sequence": None,
               "usage": _usage(c.get("usage"))}
        return Response(orjson.dumps(out), media_type="application/json", headers=headers)
    return sse(_stream(resp, mid, model), headers)


async def _stream(resp: Any, mid: str, model: Any) -> AsyncIterator[bytes]:
    yield encode_event("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
    block = -1                 # index of the open content block
    open_kind: str | None = None
    calls = ToolCallAccumulator()
    finish: str | None = None
    usage: dict[str, Any] | None = None

    def stop() -> bytes:
        return encode_event("content_block_stop", {"type": "content_block_stop", "index": block})

    async for item in chat_chunks(resp):
        if item == KEEPALIVE:
            yield encode_event("ping", {"type": "ping"})
            continue
        assert isinstance(item, dict)
        if "error" in item:
            err = item["error"] if isinstance(item["error"], dict) else {"message": str(item["error"])}
            yield encode_event("error", {"type": "error", "error": {"type": "api_error", "message": err.get("message")}})
            return
        if item.get("usage"):
            usage = item["usage"]
        for ch in item.get("choices") or ():
            d = ch.get("delta") or {}
            finish = ch.get("finish_reason") or finish
            if d.get("content"):
                if open_kind != "text":
                    if open_kind is not None:
                        yield stop()
                    block += 1
                    open_kind = "text"
                    yield encode_event("content_block_start", {"type": "content_block_start", "index": block,
                                                               "content_block": {"type": "text", "text": ""}})
                yield encode_event("content_block_delta", {"type": "content_block_delta", "index": block,
                                                           "delta": {"type": "text_delta", "text": d["content"]}})
            for tc in d.get("tool_calls") or ():
                i, new, piece = calls.feed(tc)
                if new:
                    if open_kind is not None:
                        yield stop()
                    block += 1
                    open_kind = f"tool{i}"
                    c = calls.calls[i]
                    yield encode_event("content_block_start", {"type": "content_block_start", "index": block,
                                                               "content_block": {"type": "tool_use", "id": c["id"],
                                                                                 "name": c["name"], "input": {}}})
                if piece:
                    yield encode_event("content_block_delta", {"type": "content_block_delta", "index": block,
                                                               "delta": {"type": "input_json_delta", "partial_json": piece}})
    if open_kind is not None:
        yield stop()
    u = _usage(usage)
    yield encode_event("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": STOP.get(finish or "stop", "end_turn"), "stop_sequence": None},
                                         "usage": u})
    yield encode_event("message_stop", {"type": "message_stop"})
