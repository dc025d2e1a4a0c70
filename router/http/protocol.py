"""uvicorn's HTTP protocols with OpenAI-shaped parse errors, and a loop turn's writes in one syscall.

A request the HTTP parser rejects (a bad Content-Length, a malformed request line,
bare LF line endings where the parser refuses them) never reaches the app; uvicorn
answers it itself with a plain-text 400. These subclasses answer with the same JSON
error shape as everything else. `triage serve` selects them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _bad_request(default_headers: list[tuple[bytes, bytes]], msg: str) -> bytes:
    body = orjson.dumps({"error": {"message": f"Malformed HTTP request: {msg}", "type": "invalid_request_error",
                                   "param": None, "code": "invalid_http_request"}})
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [b"content-type: application/json\r\n", b"content-length: " + str(len(body)).encode() + b"\r\n",
             b"connection: close\r\n", b"\r\n"]
    return b"".join(head) + body


class _TurnWriter:
    """The connection's transport as uvicorn writes through it: what is written during one turn of the
    event loop leaves in one writev at the end of that turn. A JSON answer's head and body go out
    together; a stream's events that arrived together (several SSE events in one upstream read) go
    out together; an event that arrives alone still leaves within the turn. Order is kept, and
    close() flushes first.

    Each send is a syscall and usually wakes the reader: with the head apart, a governed request made
    6.1 write syscalls, joined 5.0 (strace, c=1); a bare uvloop server spent ~12 against ~8 us of CPU
    per small response (two writes against one writev, same machine). A streamed chat answer from
    the simulator made 22 writes, one per event."""

    __slots__ = ("_t", "_loop", "_out")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._t = transport
        self._loop = loop
        self._out: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        out = self._out
        if out is None:
            self._out = [data]
            self._loop.call_soon(self._flush)
        else:
            out.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and not self._t.is_closing():
            if len(out) == 1:
                self._t.write(out[0])
            else:
                self._t.writelines(out)

    def close(self) -> None:
        self._flush()
        self._t.close()

    def is_closing(self) -> bool:
        return self._t.is_closing()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, set_protocol, abort, ...
        return getattr(self._t, name)


class ShapedHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_bad_request(self.server_state.default_headers, msg))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport (pause/resume reading)
        self.transport = _TurnWriter(transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The whole body is in the cycle's buffer now, so the app's receive() cannot block on it: the app
        # skips the read deadline it otherwise arms (router/http/app.py). Usually true before the app even
        # starts, as a small request arrives in one read.
        self.scope["triage.body_buffered"] = True  # type: ignore[typeddict-unknown-key]


class ShapedH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_bad_request(self.server_state.default_headers, msg))
        self.transport.close()
