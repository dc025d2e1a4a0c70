"""Raw ASGI for the chat hot path: the request headers it reads, taken once from the scope, JSON answers
sent as one `http.response.start` and one body, and event streams without Starlette's task group.

Starlette's `Request.headers` and `Response` rebuild header objects on every access and every answer;
on a path that runs thousands of times a second that was a few percent of the worker's CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

# What the chat pipeline reads from the request's headers: the key (auth), the client's request id, and
# every x-triage-* control (workflow, step, session, cache, cost cap). Anything else is never looked at.
_WANTED = frozenset({b"authorization", b"api-key", b"x-api-key", b"x-request-id"})
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")  # what Starlette sent for media_type text/event-stream


def hot_headers(raw: list[tuple[bytes, bytes]] | Any) -> dict[str, str]:
    """The headers the pipeline reads, as {lowercase name: value}; the first of a repeated header wins,
    as with Starlette's `Headers.get`."""
    out: dict[str, str] = {}
    for k, v in raw:
        if k in _WANTED or k.startswith(b"x-triage-"):
            name = k.decode("latin-1")
            if name not in out:
                out[name] = v.decode("latin-1")
    return out


def scope_headers(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """`hot_headers` of this request, computed once (the app's wrapper already did for every request)."""
    h = scope.get("triage.headers")
    if h is None:
        h = scope["triage.headers"] = hot_headers(scope["headers"])
    return h  # type: ignore[no-any-return]


class JSONAnswer:
    """A JSON response, sent as two ASGI messages with headers encoded once.

    It has what the translated endpoints read from chat's answer (`body`, `headers` as a dict,
    `status_code`) and is an ASGI app itself, so it goes wherever a Starlette `Response` would.
    Header names are lowercase; values are latin-1, as Starlette encodes them.
    """

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, body: bytes, headers: dict[str, str], status_code: int = 200) -> None:
        self.body = body
        self.headers = headers
        self.status_code = status_code

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.send_to(send)

    async def send_to(self, send: Any) -> None:
        body = self.body
        raw = [(b"content-length", b"%d" % len(body)), _JSON]
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
        await send({"type": "http.response.body", "body": body})


class SSEAnswer:
    """An event stream, sent as raw ASGI messages while a second task waits for the client to leave.

    What Starlette's StreamingResponse does (headers, then each chunk, then the end; a client that
    disconnects cancels the stream, and the generator's cleanup settles what was spent), without the
    anyio task group it runs for it: that machinery was ~10% of a streamed request's CPU. The
    translated endpoints read `body_iterator` and `headers` as they did Starlette's.
    """

    __slots__ = ("body_iterator", "headers", "status_code")

    def __init__(self, body_iterator: AsyncIterator[bytes], headers: dict[str, str], status_code: int = 200) -> None:
        self.body_iterator = body_iterator
        self.headers = headers
        self.status_code = status_code

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.send_to(send, receive)

    async def send_to(self, send: Any, receive: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            task.cancel()

        # Started before the first byte goes out, cancelled (synchronously) right after the last: once the
        # response is complete, receive() reports a disconnect that is not the client leaving.
        watcher = asyncio.get_running_loop().create_task(watch())
        it = self.body_iterator
        raw = [_SSE] + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": raw})
            async for chunk in it:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not left or task.uncancel() > 0:
                raise
            # the client left: nothing more to send, and the request ends normally
        finally:
            watcher.cancel()
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()  # cut while sending: the generator's cleanup (settling) runs now, not at GC
