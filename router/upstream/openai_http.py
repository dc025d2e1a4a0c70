"""The upstream client every tier uses to reach a provider.

OpenAI-compatible endpoints (OpenAI, vLLM, SGLang, Ollama, Together, Groq,
DeepSeek, OpenRouter, the mock, ...) go over ONE keep-alive pool of the lean
HTTP/1.1 client in ``http1``; the request body is the caller's body with only ``model`` swapped for the
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
import logging
import os
import ssl
import time
from contextlib import aclosing
from typing import Any, AsyncGenerator

import orjson

from router.http.sse import DONE, SSEDecoder
from router.upstream.deployment import Deployment
from router.upstream.errors import UpstreamError, _err, classify_status, http_error, transport_error
from router.upstream.http1 import ConnectError, ConnectTimeout, Disconnected, Malformed, Pool, Target
from router.upstream.litellm_adapter import litellm_complete, litellm_embed, litellm_stream

log = logging.getLogger("triage.upstream")

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
def _failed(dep: Deployment, e: BaseException, partial: bool, sent_counts: bool = False) -> UpstreamError:
    """The UpstreamError aiohttp's equivalent failure mapped to. ``sent_counts``: a non-stream call whose
    request went out, so a timeout after sending or a cut body was (likely) billed by the provider."""
    if isinstance(e, ConnectError):
        err = _err("connect", f"{dep.name}: cannot connect to {e.host}:{e.port} "
                   f"({e.os_error.strerror or e.os_error})", partial=partial)
    elif isinstance(e, Disconnected):
        err = _err("disconnect", f"{dep.name}: upstream closed the connection mid-response", partial=partial)
    elif isinstance(e, Malformed):
        err = _err("bad_response", f"{dep.name}: malformed HTTP response ({e})", partial=partial)
    elif isinstance(e, OSError) and not isinstance(e, TimeoutError):
        err = _err("disconnect" if partial else "connect", f"{dep.name}: connection error ({type(e).__name__})",
                   partial=partial)
    else:
        err = transport_error(dep, e, partial)
    if sent_counts and (err.kind == "disconnect" or (err.kind == "timeout" and not isinstance(e, ConnectTimeout))):
        err.consumed = {"raw": ""}
    return err


def _target(dep: Deployment, t: Target | None) -> Target:
    if t is None:
        raise _err("connect", f"{dep.name}: unusable api_base {dep.api_base!r}")
    return t


class Upstream:
    """Owns the keep-alive pool; ``start()`` once, ``close()`` at shutdown."""

    def __init__(self, *, limit: int = 4096, keepalive_timeout: float = 30.0, ttl_dns_cache: int = 300,
                 ssl_context: ssl.SSLContext | None = None):
        # ttl_dns_cache: kept for callers; addresses are resolved per new connection, and connections are kept
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._ssl = ssl_context  # None: the system's trust store (ssl.create_default_context())
        self._pool: Pool | None = None
        self._litellm: Any = None

    async def start(self, deployments: Any = ()) -> None:
        """Create the pool; pre-import litellm if any given deployment needs it."""
        if self._pool is None or self._pool.closed:
            self._pool = Pool(self._limit, self._keepalive, self._ssl)
        if any(getattr(d, "provider", None) == "litellm" for d in deployments):
            self._load_litellm()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

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

    async def _get_pool(self) -> Pool:
        if self._pool is None:
            await self.start()
        return self._pool  # type: ignore[return-value]

    # ------------------------------------------------------------ non-stream

    async def complete(self, dep: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        """Full ``chat.completion`` dict (with ``usage``) or :class:`UpstreamError`."""
        if dep.provider == "litellm":
            return await litellm_complete(self._load_litellm(), dep, body)
        if "stream" in body or "stream_options" in body or body.get("model") != dep.model:
            payload = dict(body)
            payload["model"] = dep.model
            if "stream" in payload:
                payload["stream"] = False
            # stream_options without stream is a 400 at OpenAI
            payload.pop("stream_options", None)
        else:
            payload = body  # already what is sent (the chain's prepare builds it so): no copy
        pool = self._pool or await self._get_pool()
        target = dep._target or _target(dep, None)
        try:
            resp = await pool.post(target, _dumps(payload), dep._total, dep._connect)
        except Exception as e:
            raise _failed(dep, e, False, True) from None
        raw = resp.body
        if resp.status >= 400:
            raise http_error(dep, resp.status, raw, resp.header_map())
        try:
            data = _loads(raw)
        except _JSONDecodeError:
            err = _err("bad_response", f"{dep.name}: upstream returned invalid JSON "
                       f"({len(raw)} bytes)", upstream_status=resp.status)
            err.consumed = {"raw": raw.decode("utf-8", "replace")}  # a 200: the provider billed it
            raise err from None
        if not isinstance(data, dict) or "choices" not in data:
            if isinstance(data, dict) and "error" in data:
                # some OpenAI-compatible servers report failures inside a 200
                raise error_object(dep, data["error"], False)
            raise _err("bad_response", f"{dep.name}: upstream response has no 'choices'",
                       upstream_status=resp.status)
        return data

    async def embed(self, dep: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        """``/embeddings`` of the deployment's API base: the list object with ``usage``."""
        if dep.provider == "litellm":
            return await litellm_embed(self._load_litellm(), dep, body)
        payload = dict(body)
        payload["model"] = dep.model
        pool = self._pool or await self._get_pool()
        target = dep._embed_target or _target(dep, None)
        try:
            resp = await pool.post(target, _dumps(payload), dep._total, dep._connect)
        except Exception as e:
            raise _failed(dep, e, False) from None
        raw = resp.body
        if resp.status >= 400:
            raise http_error(dep, resp.status, raw, resp.header_map())
        try:
            data = _loads(raw)
        except _JSONDecodeError:
            raise _err("bad_response", f"{dep.name}: upstream returned invalid JSON", upstream_status=resp.status) from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise _err("bad_response", f"{dep.name}: embeddings response has no 'data'", upstream_status=resp.status)
        return data

    # ------------------------------------------------------------ stream

    async def stream(self, dep: Deployment, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
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
        pool = self._pool or await self._get_pool()
        target = dep._target or _target(dep, None)
        yielded = False
        finished = False
        resp = None
        try:
            resp = await pool.open(target, _dumps(payload), dep._connect, dep._idle)
            if resp.status >= 400:
                raise http_error(dep, resp.status, await resp.read_all(), resp.header_map())
            if (resp.header("content-type") or "").split(";")[0].strip().lower() == "application/json":
                # server ignored stream=true: replay the whole answer as chunks
                for c in completion_as_chunks(dep, await resp.read_all()):
                    yield c
                return
            dec = SSEDecoder()
            feed = dec.feed
            read = resp.read
            while raw := await read():
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
            raise _failed(dep, e, yielded) from None
        finally:
            if resp is not None:
                resp.release()
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
