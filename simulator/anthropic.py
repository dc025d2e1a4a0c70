"""Anthropic Messages API (POST /v1/messages) for the mock upstream.

Same deterministic plan as chat completions (``system`` counts as one leading
message). Anthropic reports cache reads separately, so
``input_tokens = prompt_tokens - cached``, ``cache_read_input_tokens = cached``,
``cache_creation_input_tokens = 0``; ``output_tokens`` = visible tokens
(no extended thinking is simulated).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from router.http.sse import encode_event
from simulator.wire import respond, run_stream, send_fault_status, wait_disconnect

if TYPE_CHECKING:
    from simulator.state import MockState
    from simulator.wire import Plan

_dumps = orjson.dumps


def _err(etype: str, msg: str) -> bytes:
    return _dumps({"type": "error", "error": {"type": etype, "message": msg}})


def _usage(plan: Plan) -> dict[str, int]:
    return {
        "input_tokens": plan.prompt - plan.cached,
        "output_tokens": plan.visible,
        "cache_read_input_tokens": plan.cached,
        "cache_creation_input_tokens": 0,
    }


async def anthropic_messages(state: MockState, body: dict[str, Any], plan: Plan, receive: Any, send: Any) -> None:
    fault = plan.fault
    stream = bool(body.get("stream"))
    if fault:
        if fault.isdigit():
            return await send_fault_status(send, fault, plan.rule, True)
        if fault == "timeout" or (fault == "stall" and not stream):
            await wait_disconnect(receive, state.settings.hang_s)
            return await respond(send, 504, _err("api_error", "mock: timed out"))
        if not stream:
            return await respond(send, 200, b'{"id": "msg_mock", "content": [{"ty')
    mid = f"msg_mock{next(state.ids)}"
    stop = "max_tokens" if plan.finish == "length" else "end_turn"
    if not stream:
        delay = plan.total_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        resp = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": [{"type": "text", "text": "".join(plan.pieces)}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": _usage(plan),
        }
        return await respond(send, 200, _dumps(resp))
    usage = _usage(plan)
    start_usage = dict(usage, output_tokens=1)
    events = [
        encode_event("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": plan.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
        + encode_event("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
    ]
    events.extend(
        encode_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": p}})
        for p in plan.pieces
    )
    final = [
        encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        encode_event("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": {"output_tokens": plan.visible}}),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    await run_stream(state, plan, events, final, b"event: content_block_delta\ndata: {\"ty\n\n", receive, send)
