"""What the HTTP/1.1 client in ``http1`` sends and answers: request heads built once per deployment, complete
responses, and the failures it reports (mapped onto UpstreamError by ``openai_http``)."""

from __future__ import annotations

import base64
import zlib
from typing import Any
from urllib.parse import urlsplit

_Key = tuple[str, str, int]


class HTTPClientError(Exception):
    """Base of this client's failures."""


class ConnectError(HTTPClientError):
    def __init__(self, host: str, port: int, os_error: OSError):
        super().__init__(f"cannot connect to {host}:{port}")
        self.host, self.port, self.os_error = host, port, os_error


class ConnectTimeout(HTTPClientError, TimeoutError):
    """No connection in time: the request was never sent."""


class Disconnected(HTTPClientError):
    """The response ended early: EOF before it was complete, or a body that would not decode."""


class Malformed(HTTPClientError):
    """Not parseable as an HTTP/1.1 response."""


class _Stale(HTTPClientError):
    """A reused connection ended (EOF/reset) before any byte of the response: the server had closed it."""


class Target:
    """Where one deployment's requests go: pool key, address, and the request head up to Content-Length."""

    __slots__ = ("head", "host", "key", "port", "tls")

    def __init__(self, url: str, headers: Any):
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"unsupported upstream URL {url!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        self.key: _Key = (u.scheme, self.host, self.port)
        host = f"[{self.host}]" if ":" in self.host else self.host
        if u.port:
            host += f":{u.port}"
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}"]
        names = set()
        for k, v in headers.items():
            if any(c in str(k) + str(v) for c in "\r\n\0"):
                raise ValueError("header names and values must not contain CR, LF or NUL")
            names.add(k.lower())
            lines.append(f"{k}: {v}")
        if "accept-encoding" not in names:
            lines.append("Accept-Encoding: gzip, deflate")  # both are decoded below, as aiohttp did
        if u.username and "authorization" not in names:
            cred = f"{u.username}:{u.password or ''}".encode()
            lines.append("Authorization: Basic " + base64.b64encode(cred).decode())
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode()


class Response:
    """A complete (non-stream) answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def header_map(self) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.headers}


def _header(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    n = name.encode()
    for k, v in headers:
        if len(k) == len(n) and k.lower() == n:
            return v.decode("latin-1")
    return None


def _inflater(enc: str, first: bytes) -> Any:
    # servers send "deflate" both zlib-wrapped (per the RFC) and raw: tell by the first byte, as aiohttp does
    return zlib.decompressobj(31 if enc == "gzip" else (15 if first[:1] and first[0] & 0x0F == 8 else -15))
