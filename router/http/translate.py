"""Shared plumbing for endpoints served through the chat pipeline (completions, responses, messages).

Each of those endpoints translates its request into a chat body, runs it through
`ChatHandler` (so admission, routing, metering and settling are exactly chat's),
and translates the chat response or stream back into its own shape.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator

import orjson

from router.http.asgi import JSONAnswer, SSEAnswer
from router.http.sse import DONE, SSEDecoder

KEEPALIVE = "keep-alive"


def chat_json(resp: JSONAnswer | SSEAnswer) -> dict[str, Any]:
    assert isinstance(resp, JSONAnswer), "chat streamed an answer nobody asked to stream"
    return orjson.loads(resp.body)


def triage_headers(resp: JSONAnswer | SSEAnswer) -> dict[str, str]:
    """The x-triage-* / x-request-id headers the chat response carried."""
    return {k: v for k, v in resp.headers.items() if k.startswith("x-")}


async def chat_chunks(resp: JSONAnswer | SSEAnswer) -> AsyncIterator[dict[str, Any] | str]:
    """The chat stream's chunk dicts (an in-band failure arrives as {"error": ...}); keep-alive comments
    as KEEPALIVE. Closing this closes the chat stream, which settles what was spent."""
    assert isinstance(resp, SSEAnswer), "chat answered a stream request with JSON"
    dec = SSEDecoder()
    async with aclosing(resp.body_iterator) as it:  # type: ignore[type-var]
        async for b in it:
            raw = b if isinstance(b, bytes) else str(b).encode()
            if raw.startswith(b":"):
                yield KEEPALIVE
                continue
            for data in dec.feed(raw):
                if data == DONE:
                    return
                yield orjson.loads(data)


def sse(gen: AsyncIterator[bytes], headers: dict[str, str]) -> SSEAnswer:
    return SSEAnswer(gen, headers)


def copy_fields(src: dict[str, Any], dst: dict[str, Any], names: tuple[str, ...]) -> None:
    for k in names:
        if k in src and src[k] is not None:
            dst[k] = src[k]


class ToolCallAccumulator:
    """Reassembles streamed tool-call deltas by index (id and name first, arguments in pieces)."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, str]] = {}

    def feed(self, tc: dict[str, Any]) -> tuple[int, bool, str]:
        """(index, is this the call's first delta, the arguments piece it carries)."""
        i = int(tc.get("index") or 0)
        fn = tc.get("function") or {}
        new = i not in self.calls
        slot = self.calls.setdefault(i, {"id": "", "name": "", "arguments": ""})
        if tc.get("id"):
            slot["id"] = tc["id"]
        if fn.get("name"):
            slot["name"] += fn["name"]
        piece = fn.get("arguments") or ""
        slot["arguments"] += piece
        return i, new, piece
