"""POST /v1/responses: the stateless subset of OpenAI's Responses API, through the chat pipeline.

Supported: `input` as text or a list of message / function_call /
function_call_output items, `instructions`, function `tools` and `tool_choice`,
`text.format` (json_object / json_schema), `reasoning.effort`,
`max_output_tokens`, sampling knobs, and streaming with the Responses event
types. `triage/*` models are classified and routed like chat. Nothing is stored:
`previous_response_id` and `store: true` retrieval are refused with a 400.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.http.asgi import SSEAnswer
from router.http.chat import ChatHandler, read_json
from router.http.errors import ProxyError, bad_request
from router.http.sse import encode_event
from router.http.translate import (
    KEEPALIVE,
    ToolCallAccumulator,
    chat_chunks,
    chat_json,
    copy_fields,
    sse,
    triage_headers,
)

PASS = ("model", "temperature", "top_p", "user", "metadata", "parallel_tool_calls", "stream", "seed")


def _text(content: Any) -> Any:
    """Responses content parts -> chat content (string, or parts when there are images)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("'content' must be a string or a list of parts.", param="input")
    parts: list[dict[str, Any]] = []
    for p in content:
        t = p.get("type") if isinstance(p, dict) else None
        if t in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": p.get("text", "")})
        elif t == "input_image":
            url = p.get("image_url") or ""
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": p.get("detail", "auto")}})
        else:
            raise bad_request(f"Unsupported input content part type '{t}'.", param="input")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def to_messages(inp: Any, instructions: Any) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        msgs.append({"role": "system", "content": instructions})
    if isinstance(inp, str):
        msgs.append({"role": "user", "content": inp})
        return msgs
    if not isinstance(inp, list) or not inp:
        raise ProxyError(400, "Missing required parameter: 'input'.", "invalid_request_error", "missing_required_parameter", "input")
    for item in inp:
        if not isinstance(item, dict):
            raise bad_request("'input' items must be objects.", param="input")
        t = item.get("type", "message")
        if t == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise bad_request(f"Unsupported input role '{role}'.", param="input")
            msgs.append({"role": role, "content": _text(item.get("content"))})
        elif t == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            prev = msgs[-1] if msgs else None
            if prev and prev["role"] == "assistant" and prev.get("tool_calls") is not None and not prev.get("content"):
                prev["tool_calls"].append(call)  # consecutive calls are one assistant turn
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif t == "function_call_output":
            out = item.get("output")
            msgs.append({"role": "tool", "tool_call_id": item.get("call_id"),
                         "content": out if isinstance(out, str) else orjson.dumps(out).decode()})
        elif t == "reasoning":
            continue  # stateless: earlier reasoning summaries carry nothing the model needs
        else:
            raise bad_request(f"Unsupported input item type '{t}'.", param="input")
    return msgs


def to_chat(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    if raw.get("previous_response_id"):
        raise bad_request("Triage serves the stateless subset of the Responses API: send the whole conversation "
                          "in 'input' instead of 'previous_response_id'.", param="previous_response_id")
    body: dict[str, Any] = {"messages": to_messages(raw.get("input"), raw.get("instructions"))}
    copy_fields(raw, body, PASS)
    if raw.get("max_output_tokens") is not None:
        body["max_tokens"] = raw["max_output_tokens"]
    if body.get("stream"):
        body["stream_options"] = {"include_usage": True}
    tools = []
    for t in raw.get("tools") or ():
        if not isinstance(t, dict) or t.get("type") != "function":
            raise bad_request(f"Only function tools are supported (got '{t.get('type') if isinstance(t, dict) else t}').",
                              param="tools")
        fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
        tools.append({"type": "function", "function": fn})
    if tools:
        body["tools"] = tools
    tc = raw.get("tool_choice")
    if isinstance(tc, str):
        body["tool_choice"] = tc
    elif isinstance(tc, dict) and tc.get("type") == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": tc.get("name")}}
    fmt = (raw.get("text") or {}).get("format") if isinstance(raw.get("text"), dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
        elif fmt.get("type") == "json_object":
            body["response_format"] = {"type": "json_object"}
    effort = (raw.get("reasoning") or {}).get("effort") if isinstance(raw.get("reasoning"), dict) else None
    if effort in ("minimal", "low", "medium", "high"):
        body["reasoning_effort"] = effort
    return body


def _usage(u: dict[str, Any] | None) -> dict[str, Any] | None:
    if not u:
        return None
    return {"input_tokens": u.get("prompt_tokens", 0),
            "input_tokens_details": {"cached_tokens": (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)},
            "output_tokens": u.get("completion_tokens", 0),
            "output_tokens_details": {"reasoning_tokens": (u.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)},
            "total_tokens": u.get("total_tokens", 0), "cost": u.get("cost")}


def _envelope(rid: str, raw: dict[str, Any], model: str, status: str, output: list[dict[str, Any]],
              usage: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": model,
        "output": output, "usage": usage, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
        "instructions": raw.get("instructions"), "max_output_tokens": raw.get("max_output_tokens"),
        "metadata": raw.get("metadata") or {}, "parallel_tool_calls": raw.get("parallel_tool_calls", True),
        "temperature": raw.get("temperature"), "top_p": raw.get("top_p"), "tool_choice": raw.get("tool_choice", "auto"),
        "tools": raw.get("tools") or [], "text": raw.get("text") or {"format": {"type": "text"}},
    }


def _message_item(mid: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": mid, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def _call_item(i: int, rid: str, call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    fn = call.get("function") or call
    return {"type": "function_call", "id": f"fc_{rid}_{i}", "call_id": call.get("id") or f"call_{rid}_{i}",
            "name": fn.get("name"), "arguments": fn.get("arguments") or "", "status": status}


async def responses(request: Request, chat: ChatHandler) -> Response | SSEAnswer:
    raw = await read_json(request, chat.state.snapshot.config.server.max_body_bytes)
    body = to_chat(raw)
    resp = await chat(request, body)
    headers = triage_headers(resp)
    rid = "resp_" + request.scope["triage.request_id"].removeprefix("req_")
    if not body.get("stream"):
        c = chat_json(resp)
        ch = (c.get("choices") or [{}])[0]
        msg = ch.get("message") or {}
        output: list[dict[str, Any]] = []
        if msg.get("content"):
            output.append(_message_item("msg_" + rid[5:], msg["content"]))
        output += [_call_item(i, rid[5:], tc) for i, tc in enumerate(msg.get("tool_calls") or ())]
        finish = ch.get("finish_reason")
        out = _envelope(rid, raw, c.get("model") or raw.get("model"), "incomplete" if finish == "length" else "completed",
                        output, _usage(c.get("usage")), finish)
        return Response(orjson.dumps(out), media_type="application/json", headers=headers)
    return sse(_stream(resp, raw, rid), headers)


async def _stream(resp: Any, raw: dict[str, Any], rid: str) -> AsyncIterator[bytes]:
    seq = 0
    short = rid[5:]

    def ev(kind: str, **data: Any) -> bytes:
        nonlocal seq
        seq += 1
        return encode_event(kind, {"type": kind, "sequence_number": seq, **data})

    model = raw.get("model") or ""
    yield ev("response.created", response=_envelope(rid, raw, model, "in_progress", [], None, None))
    yield ev("response.in_progress", response=_envelope(rid, raw, model, "in_progress", [], None, None))
    text: list[str] = []
    text_index: int | None = None
    slots: list[tuple[str, int]] = []          # output order: ("text", 0) or ("call", chat index)
    calls = ToolCallAccumulator()
    call_out: dict[int, int] = {}
    usage: dict[str, Any] | None = None
    finish: str | None = None
    mid = "msg_" + short
    async for item in chat_chunks(resp):
        if item == KEEPALIVE:
            yield b": keep-alive\n\n"
            continue
        assert isinstance(item, dict)
        if "error" in item:
            err = item["error"] if isinstance(item["error"], dict) else {"message": str(item["error"])}
            yield ev("error", code=err.get("code"), message=err.get("message"), param=err.get("param"))
            return
        model = item.get("model") or model
        if item.get("usage"):
            usage = item["usage"]
        for ch in item.get("choices") or ():
            d = ch.get("delta") or {}
            finish = ch.get("finish_reason") or finish
            if d.get("content"):
                if text_index is None:
                    text_index = len(slots)
                    slots.append(("text", 0))
                    yield ev("response.output_item.added", output_index=text_index, item=_message_item(mid, "", "in_progress"))
                    yield ev("response.content_part.added", item_id=mid, output_index=text_index, content_index=0,
                             part={"type": "output_text", "text": "", "annotations": []})
                text.append(d["content"])
                yield ev("response.output_text.delta", item_id=mid, output_index=text_index, content_index=0,
                         delta=d["content"])
            for tc in d.get("tool_calls") or ():
                i, new, piece = calls.feed(tc)
                if new:
                    call_out[i] = len(slots)
                    slots.append(("call", i))
                    yield ev("response.output_item.added", output_index=call_out[i],
                             item=_call_item(i, short, {"id": calls.calls[i]["id"], "name": calls.calls[i]["name"],
                                                        "arguments": ""}, "in_progress"))
                if piece:
                    yield ev("response.function_call_arguments.delta", item_id=f"fc_{short}_{i}",
                             output_index=call_out[i], delta=piece)
    output: list[dict[str, Any]] = []
    for kind, i in slots:
        idx = len(output)
        if kind == "text":
            full = "".join(text)
            yield ev("response.output_text.done", item_id=mid, output_index=idx, content_index=0, text=full)
            yield ev("response.content_part.done", item_id=mid, output_index=idx, content_index=0,
                     part={"type": "output_text", "text": full, "annotations": []})
            done = _message_item(mid, full)
        else:
            c = calls.calls[i]
            yield ev("response.function_call_arguments.done", item_id=f"fc_{short}_{i}", output_index=idx,
                     arguments=c["arguments"])
            done = _call_item(i, short, {"id": c["id"], "name": c["name"], "arguments": c["arguments"]})
        yield ev("response.output_item.done", output_index=idx, item=done)
        output.append(done)
    status = "incomplete" if finish == "length" else "completed"
    yield ev("response.incomplete" if status == "incomplete" else "response.completed",
             response=_envelope(rid, raw, model, status, output, _usage(usage), finish))
