"""uvicorn's HTTP protocols with OpenAI-shaped parse errors.

A request the HTTP parser rejects (a bad Content-Length, a malformed request line,
bare LF line endings where the parser refuses them) never reaches the app; uvicorn
answers it itself with a plain-text 400. These subclasses answer with the same JSON
error shape as everything else. `triage serve` selects them.
"""

from __future__ import annotations

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


class ShapedHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_bad_request(self.server_state.default_headers, msg))
        self.transport.close()


class ShapedH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_bad_request(self.server_state.default_headers, msg))
        self.transport.close()
