"""The upstream client every tier uses to reach a provider.

OpenAI-compatible endpoints (OpenAI, vLLM, SGLang, Ollama, Together, Groq,
DeepSeek, OpenRouter, the mock, ...) go over ONE pooled aiohttp session; the
request body is the caller's body with only ``model`` swapped for the
deployment's provider id, so tools/response_format/seed/user/metadata pass
through untouched. Other providers (anthropic, bedrock, vertex, gemini, ...)
go through ``litellm.acompletion``, imported once on first use, and their
responses are converted to plain OpenAI-shaped dicts.

Every failure surfaces as :class:`UpstreamError` with a stable ``kind``; the
API key never appears in a message (it is also scrubbed from upstream error
text, since some providers echo part of it).

Streams are async generators: consume them with ``contextlib.aclosing`` (or
run them to the end) so an abandoned stream releases its connection promptly.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import aiohttp
import orjson

from router.sse import DONE, SSEDecoder

log = logging.getLogger("triage.upstream")

_loads = orjson.loads
_dumps = orjson.dumps
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

    @property
    def retryable(self) -> bool:
        # A disconnect before any output (e.g. a stale keep-alive socket) is as safe to retry as a 502.
        return self.kind in _RETRYABLE or (self.kind == "disconnect" and not self.partial)

    def __repr__(self) -> str:
        return (f"UpstreamError(status={self.status}, kind={self.kind!r}, message={self.message!r}, "
                f"retry_after={self.retry_after}, upstream_status={self.upstream_status})")


def _err(kind: str, message: str, **kw: Any) -> UpstreamError:
    return UpstreamError(_STATUS[kind], kind, message, **kw)


@dataclass(eq=False)
class Deployment:
    """One concrete upstream behind a model alias.

    ``model`` is the id sent upstream: the bare provider id for
    ``provider="openai"`` (any OpenAI-compatible endpoint), or the
    provider-prefixed litellm id (``anthropic/claude-...``) for ``"litellm"``.
    """

    name: str
    model: str
    provider: str = "openai"
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    stream_idle_timeout: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    supports_reasoning: bool = False
    # Precomputed once so the hot path only does lookups.
    url: str = field(init=False, repr=False)
    _headers: dict[str, str] = field(init=False, repr=False)
    _timeout: aiohttp.ClientTimeout = field(init=False, repr=False)
    _stream_timeout: aiohttp.ClientTimeout = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.provider not in ("openai", "litellm"):
            raise ValueError(f"deployment {self.name!r}: provider must be 'openai' or 'litellm'")
        timeout = float(self.timeout or 60.0)
        idle = float(self.stream_idle_timeout or timeout)
        base = (self.api_base or ("https://api.openai.com/v1" if self.provider == "openai" else "")).rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        h = {"content-type": "application/json", "accept": "application/json"}
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        h.update(self.headers)
        self._headers = h
        connect = min(timeout, 10.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect)
        # A stream may legitimately run for long; what must not happen is silence.
        # sock_read also bounds the wait for response headers (time to first byte).
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=idle)

    def scrub(self, text: str) -> str:
        # very short keys are test placeholders; replacing them would mangle ordinary words
        if self.api_key and len(self.api_key) >= 8 and self.api_key in text:
            text = text.replace(self.api_key, "***")
        return text


class Upstream:
    """Owns the pooled HTTP session; ``start()`` once, ``close()`` at shutdown."""

    def __init__(self, *, limit: int = 4096, keepalive_timeout: float = 30.0, ttl_dns_cache: int = 300):
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._ttl_dns = ttl_dns_cache
        self._session: aiohttp.ClientSession | None = None
        self._litellm: Any = None

    async def start(self, deployments: Any = ()) -> None:
        """Create the session; pre-import litellm if any given deployment needs it."""
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=self._ttl_dns,
                                        keepalive_timeout=self._keepalive, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=conn, json_serialize=lambda o: _dumps(o).decode(),
                skip_auto_headers=("User-Agent",), auto_decompress=True,
            )
        if any(getattr(d, "provider", None) == "litellm" for d in deployments):
            self._load_litellm()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Upstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _load_litellm(self) -> Any:
        if self._litellm is None:
            # Without this litellm fetches its price map over the network at import and can stall.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            t0 = time.perf_counter()
            import litellm  # noqa: PLC0415 - deliberate one-time lazy import

            litellm.suppress_debug_info = True
            self._litellm = litellm
            log.info("litellm imported in %.1fs", time.perf_counter() - t0)
        return self._litellm

    async def _sess(self) -> aiohttp.ClientSession:
        s = self._session
        if s is None:
            await self.start()
            s = self._session
        return s  # type: ignore[return-value]

    # ------------------------------------------------------------ non-stream

    async def complete(self, dep: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        """Full ``chat.completion`` dict (with ``usage``) or :class:`UpstreamError`."""
        if dep.provider == "litellm":
            return await litellm_complete(self._load_litellm(), dep, body)
        payload = dict(body)
        payload["model"] = dep.model
        if "stream" in payload:
            payload["stream"] = False
        # stream_options without stream is a 400 at OpenAI
        payload.pop("stream_options", None)
        session = self._session or await self._sess()
        try:
            async with session.post(dep.url, data=_dumps(payload), headers=dep._headers,
                                    timeout=dep._timeout) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise http_error(dep, resp.status, raw, resp.headers)
        except UpstreamError:
            raise
        except Exception as e:
            raise transport_error(dep, e, False) from None
        try:
            data = _loads(raw)
        except _JSONDecodeError:
            raise _err("bad_response", f"{dep.name}: upstream returned invalid JSON "
                       f"({len(raw)} bytes)", upstream_status=resp.status) from None
        if not isinstance(data, dict) or "choices" not in data:
            if isinstance(data, dict) and "error" in data:
                # some OpenAI-compatible servers report failures inside a 200
                raise error_object(dep, data["error"], False)
            raise _err("bad_response", f"{dep.name}: upstream response has no 'choices'",
                       upstream_status=resp.status)
        return data

    # ------------------------------------------------------------ stream

    async def stream(self, dep: Deployment, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield parsed ``chat.completion.chunk`` dicts; usage is always requested.

        Errors before the first chunk are raised from the first ``__anext__``
        (so the caller can still fall back); errors after it carry ``partial``.
        """
        if dep.provider == "litellm":
            async with aclosing(litellm_stream(self._load_litellm(), dep, body)) as inner:
                async for c in inner:
                    yield c
            return
        payload = dict(body)
        payload["model"] = dep.model
        payload["stream"] = True
        so = payload.get("stream_options")
        payload["stream_options"] = {**so, "include_usage": True} if isinstance(so, dict) else {"include_usage": True}
        session = self._session or await self._sess()
        yielded = False
        finished = False
        try:
            async with session.post(dep.url, data=_dumps(payload), headers=dep._headers,
                                    timeout=dep._stream_timeout) as resp:
                if resp.status >= 400:
                    raise http_error(dep, resp.status, await resp.read(), resp.headers)
                if resp.content_type == "application/json":
                    # server ignored stream=true: replay the whole answer as chunks
                    for c in completion_as_chunks(dep, await resp.read()):
                        yield c
                    return
                dec = SSEDecoder()
                feed = dec.feed
                async for raw in resp.content.iter_any():
                    for data in feed(raw):
                        if data == DONE:
                            return
                        chunk = parse_chunk(dep, data, yielded)
                        if not finished:
                            for ch in chunk.get("choices") or ():
                                if ch.get("finish_reason"):
                                    finished = True
                        yield chunk
                        yielded = True
                for data in dec.flush():
                    if data == DONE:
                        return
                    yield parse_chunk(dep, data, yielded)
                    yielded = True
        except UpstreamError:
            raise
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as e:
            raise transport_error(dep, e, yielded) from None
        if not finished:
            raise _err("disconnect", f"{dep.name}: stream ended before completion", partial=yielded)


def parse_chunk(dep: Deployment, data: bytes, partial: bool) -> dict[str, Any]:
    try:
        chunk = _loads(data)
    except _JSONDecodeError:
        raise _err("bad_response", f"{dep.name}: invalid JSON in stream event", partial=partial) from None
    if not isinstance(chunk, dict):
        raise _err("bad_response", f"{dep.name}: stream event is not an object", partial=partial)
    if "error" in chunk and not chunk.get("choices"):
        # vLLM/OpenRouter report mid-stream failures as a data event with an error object
        raise error_object(dep, chunk["error"], partial)
    return chunk


def error_object(dep: Deployment, err: Any, partial: bool) -> UpstreamError:
    msg = err.get("message") if isinstance(err, dict) else str(err)
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    e = classify_status(dep, status, dep.scrub(str(msg))[:500], None)
    e.partial = partial
    return e


def completion_as_chunks(dep: Deployment, raw: bytes) -> list[dict[str, Any]]:
    try:
        data = _loads(raw)
    except _JSONDecodeError:
        raise _err("bad_response", f"{dep.name}: upstream returned invalid JSON") from None
    if not isinstance(data, dict) or "choices" not in data:
        if isinstance(data, dict) and "error" in data:
            raise error_object(dep, data["error"], False)
        raise _err("bad_response", f"{dep.name}: upstream response has no 'choices'")
    base = {"id": data.get("id"), "object": "chat.completion.chunk", "created": data.get("created"),
            "model": data.get("model")}
    choices = [{"index": c.get("index", 0), "delta": c.get("message") or {}, "logprobs": c.get("logprobs"),
                "finish_reason": c.get("finish_reason") or "stop"} for c in data["choices"]]
    out = [dict(base, choices=choices)]
    if data.get("usage"):
        out.append(dict(base, choices=[], usage=data["usage"]))
    return out


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


# Last: the litellm adapter uses the error helpers above; litellm itself stays unimported.
from router.upstream_litellm import litellm_complete, litellm_stream  # noqa: E402
