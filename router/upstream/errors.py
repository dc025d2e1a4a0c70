"""Upstream failures: one exception with a stable ``kind``, and the mapping from HTTP statuses,
retry-after headers and transport exceptions onto it. Messages never carry the API key."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

if TYPE_CHECKING:
    from router.upstream.deployment import Deployment

log = logging.getLogger("triage.upstream")

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_RETRYABLE = frozenset({"rate_limited", "server_error", "timeout", "connect"})
_STATUS = {"rate_limited": 429, "server_error": 502, "timeout": 504, "connect": 502,
           "bad_response": 502, "disconnect": 502}


class UpstreamError(Exception):
    """A provider call failed. ``status`` is what the proxy should answer with.

    ``partial`` is True when a stream already yielded chunks before failing,
    in which case retrying on another deployment would duplicate output.
    """

    def __init__(self, status: int, kind: str, message: str, retry_after: float | None = None,
                 upstream_status: int | None = None, partial: bool = False):
        super().__init__(f"{kind}: {message}")
        self.status = status
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.partial = partial
        # The provider most likely billed this attempt although we got no usable answer (timed out after
        # the request was sent, body cut mid-response, 200 with malformed JSON): what we know of it,
        # {"raw": partial or malformed body text} (may be empty), for the chain to bill a best estimate.
        self.consumed: dict[str, Any] | None = None

    @property
    def retryable(self) -> bool:
        # A disconnect before any output (e.g. a stale keep-alive socket) is as safe to retry as a 502.
        return self.kind in _RETRYABLE or (self.kind == "disconnect" and not self.partial)

    def __repr__(self) -> str:
        return (f"UpstreamError(status={self.status}, kind={self.kind!r}, message={self.message!r}, "
                f"retry_after={self.retry_after}, upstream_status={self.upstream_status})")


def _err(kind: str, message: str, **kw: Any) -> UpstreamError:
    return UpstreamError(_STATUS[kind], kind, message, **kw)


def parse_retry_after(headers: Any) -> float | None:
    v = headers.get("retry-after-ms")
    if v:
        try:
            return max(0.0, float(v) / 1000)
        except ValueError:
            pass
    v = headers.get("retry-after")
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(raw: bytes) -> str:
    try:
        data = _loads(raw)
    except _JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            m = err.get("message") or err.get("detail") or err.get("msg")
            if m:
                return str(m)
        elif isinstance(err, str):
            return err
        if "detail" in data:
            return str(data["detail"])
    return raw[:300].decode("utf-8", "replace").strip()


def classify_status(dep: Deployment, status: int, message: str, retry_after: float | None) -> UpstreamError:
    if status == 429:
        return UpstreamError(429, "rate_limited", f"{dep.name}: {message}", retry_after, 429)
    if status >= 500:
        return UpstreamError(502, "server_error", f"{dep.name}: upstream {status}: {message}", retry_after, status)
    if status == 408:
        return UpstreamError(504, "timeout", f"{dep.name}: upstream 408: {message}", None, status)
    return UpstreamError(status, "client_error", message, None, status)


def http_error(dep: Deployment, status: int, raw: bytes, headers: Any) -> UpstreamError:
    msg = dep.scrub(_error_message(raw))[:500] or f"HTTP {status}"
    return classify_status(dep, status, msg, parse_retry_after(headers))


def consumed_transport_error(dep: Deployment, e: BaseException, raw: bytes = b"") -> UpstreamError:
    """transport_error for a non-stream call whose request reached the provider: a read timeout or a
    body cut mid-response means tokens were (likely) generated and billed."""
    err = transport_error(dep, e, False)
    connect_timeout = getattr(aiohttp, "ConnectionTimeoutError", None)
    if (err.kind == "timeout" and not (connect_timeout and isinstance(e, connect_timeout))) or err.kind == "disconnect":
        err.consumed = {"raw": raw.decode("utf-8", "replace")}
    return err


def transport_error(dep: Deployment, e: BaseException, partial: bool) -> UpstreamError:
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        what = "stream idle" if partial else "request"
        return _err("timeout", f"{dep.name}: {what} timed out", partial=partial)
    if isinstance(e, aiohttp.ClientConnectorError):
        return _err("connect", f"{dep.name}: cannot connect to {e.host}:{e.port} ({e.os_error.strerror or e.os_error})",
                    partial=partial)
    if isinstance(e, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return _err("disconnect", f"{dep.name}: upstream closed the connection mid-response", partial=partial)
    if isinstance(e, aiohttp.ClientResponseError):
        return _err("bad_response", f"{dep.name}: malformed HTTP response ({e.message})", partial=partial)
    if isinstance(e, (aiohttp.ClientOSError, ConnectionError)):
        kind = "disconnect" if partial else "connect"
        return _err(kind, f"{dep.name}: connection error ({type(e).__name__})", partial=partial)
    if isinstance(e, aiohttp.ClientError):
        return _err("connect", f"{dep.name}: {type(e).__name__}", partial=partial)
    log.exception("unexpected upstream failure for %s", dep.name)
    return _err("bad_response", f"{dep.name}: {type(e).__name__}", partial=partial)
