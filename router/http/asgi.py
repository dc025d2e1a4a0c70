"""Raw ASGI for the chat hot path: the request headers it reads, taken once from the scope, and JSON
answers sent as one `http.response.start` and one body.

Starlette's `Request.headers` and `Response` rebuild header objects on every access and every answer;
on a path that runs thousands of times a second that was a few percent of the worker's CPU.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

# What the chat pipeline reads from the request's headers: the key (auth), the client's request id, and
# every x-triage-* control (workflow, step, session, cache, cost cap). Anything else is never looked at.
_WANTED = frozenset({b"authorization", b"api-key", b"x-api-key", b"x-request-id"})
_JSON = (b"content-type", b"application/json")


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
