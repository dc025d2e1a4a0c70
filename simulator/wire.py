"""ASGI plumbing shared by the OpenAI and Anthropic endpoints: bodies, responses, faults, paced streams."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from simulator import difficulty as dm
from simulator import model as mm
from simulator.state import MockState

_loads = orjson.loads
_dumps = orjson.dumps
JSON_CT = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_STREAM_FAULTS = ("disconnect", "truncate", "stall")
_OTHER_FAULTS = ("timeout", "timeout_after", "malformed", "json_stream", "error_event")
_ERROR_OBJ = b'{"message":"mock: upstream error","type":"server_error","param":null,"code":500}'


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
