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
import logging
import os
import time
from contextlib import aclosing
from typing import Any, AsyncGenerator

import aiohttp
import orjson

from router.http.sse import DONE, SSEDecoder
from router.upstream.deployment import Deployment
from router.upstream.errors import (
    UpstreamError,
    _err,
    classify_status,
    consumed_transport_error,
    http_error,
    transport_error,
)
from router.upstream.litellm_adapter import litellm_complete, litellm_embed, litellm_stream

log = logging.getLogger("triage.upstream")

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError
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
                auto_decompress=True,
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
        if "stream" in body or "stream_options" in body or body.get("model") != dep.model:
            payload = dict(body)
            payload["model"] = dep.model
            if "stream" in payload:
                payload["stream"] = False
            # stream_options without stream is a 400 at OpenAI
            payload.pop("stream_options", None)
        else:
            payload = body  # already what is sent (the chain's prepare builds it so): no copy
        session = self._session or await self._sess()
        try:
            async with session.post(dep._url, data=_dumps(payload), headers=dep._headers,
                                    timeout=dep._timeout) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise http_error(dep, resp.status, raw, resp.headers)
        except UpstreamError:
            raise
        except Exception as e:
            raise consumed_transport_error(dep, e) from None
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
        session = self._session or await self._sess()
        url = (dep.api_base or "").rstrip("/") + "/embeddings"
        try:
            async with session.post(url, data=_dumps(payload), headers=dep._headers, timeout=dep._timeout) as resp:
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
        session = self._session or await self._sess()
        yielded = False
        finished = False
        try:
            async with session.post(dep._url, data=_dumps(payload), headers=dep._headers,
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
