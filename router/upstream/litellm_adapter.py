"""litellm path of :mod:`router.upstream.openai_http` (providers that do not speak OpenAI's wire format).

The litellm module object is passed in by ``Upstream`` (imported once, lazily),
so importing this module never imports litellm. Responses and chunks are
flattened to plain OpenAI-shaped dicts; usage keeps
``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``
and, when the provider reports cache writes (Anthropic),
``cache_creation_input_tokens``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncGenerator

from router.upstream.errors import UpstreamError, classify_status, parse_retry_after, transport_error

if TYPE_CHECKING:
    from router.upstream.deployment import Deployment

_DROP = ("model", "stream", "stream_options")


def _kwargs(dep: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    kw = {k: v for k, v in body.items() if k not in _DROP}
    kw["model"] = dep.model
    if dep.api_base:
        kw["api_base"] = dep.api_base
    if dep.api_key:
        kw["api_key"] = dep.api_key
    kw["timeout"] = dep.timeout
    if dep.headers:
        kw["extra_headers"] = dep.headers
    # Retries/fallbacks are the router's job; params a provider lacks are dropped as LiteLLM proxy does.
    kw["num_retries"] = 0
    kw["max_retries"] = 0
    kw["drop_params"] = dep.drop_params
    return kw


def _dump(obj: Any) -> Any:
    if obj is None or isinstance(obj, (str, int, float, bool, list, dict)):
        return obj
    md = getattr(obj, "model_dump", None)
    if md is not None:
        return md(exclude_none=False)
    return dict(obj)


def normalize_usage(u: Any) -> dict[str, Any] | None:
    if u is None:
        return None
    d = u if isinstance(u, dict) else _dump(u)
    prompt = int(d.get("prompt_tokens") or 0)
    completion = int(d.get("completion_tokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(d.get("total_tokens") or prompt + completion),
    }
    ptd = d.get("prompt_tokens_details") or {}
    if not isinstance(ptd, dict):
        ptd = _dump(ptd)
    cached = ptd.get("cached_tokens") or d.get("cache_read_input_tokens") or 0
    out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    ctd = d.get("completion_tokens_details") or {}
    if not isinstance(ctd, dict):
        ctd = _dump(ctd)
    out["completion_tokens_details"] = {"reasoning_tokens": int(ctd.get("reasoning_tokens") or 0)}
    cw = d.get("cache_creation_input_tokens")
    if cw:
        out["cache_creation_input_tokens"] = int(cw)
    return out


def _choice(c: Any, key: str) -> dict[str, Any]:
    c = c if isinstance(c, dict) else _dump(c)
    msg = c.get(key)
    msg = msg if isinstance(msg, dict) or msg is None else _dump(msg)
    out: dict[str, Any] = {"index": c.get("index", 0), key: _clean_message(msg) if msg else ({} if key == "delta" else None),
                           "logprobs": c.get("logprobs"), "finish_reason": c.get("finish_reason")}
    return out


_MSG_KEYS = ("role", "content", "tool_calls", "function_call", "refusal", "reasoning_content", "audio")


def _clean_message(m: dict[str, Any]) -> dict[str, Any]:
    # litellm adds provider_specific_fields/thinking_blocks etc.; keep the OpenAI surface only
    return {k: m[k] for k in _MSG_KEYS if m.get(k) is not None or (k == "content" and k in m)}


def to_openai_response(resp: Any) -> dict[str, Any]:
    d = resp if isinstance(resp, dict) else _dump(resp)
    return {
        "id": d.get("id"),
        "object": "chat.completion",
        "created": d.get("created"),
        "model": d.get("model"),
        "system_fingerprint": d.get("system_fingerprint"),
        "choices": [_choice(c, "message") for c in d.get("choices") or ()],
        "usage": normalize_usage(d.get("usage") or getattr(resp, "usage", None)),
    }


def to_openai_chunk(chunk: Any) -> dict[str, Any]:
    d = chunk if isinstance(chunk, dict) else _dump(chunk)
    out: dict[str, Any] = {
        "id": d.get("id"),
        "object": "chat.completion.chunk",
        "created": d.get("created"),
        "model": d.get("model"),
        "system_fingerprint": d.get("system_fingerprint"),
        "choices": [_choice(c, "delta") for c in d.get("choices") or ()],
    }
    usage = d.get("usage") or getattr(chunk, "usage", None)
    if usage:
        out["usage"] = normalize_usage(usage)
        # litellm puts an empty choice on the usage chunk; OpenAI sends choices=[] there
        if all(not c["finish_reason"] and not any(v is not None for k, v in c["delta"].items() if k != "role")
               for c in out["choices"]):
            out["choices"] = []
    return out


def map_exception(dep: Deployment, e: BaseException, partial: bool = False) -> Exception:
    if isinstance(e, UpstreamError):
        return e
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return transport_error(dep, e, partial)
    name = type(e).__name__
    if name == "MidStreamFallbackError" and isinstance(getattr(e, "original_exception", None), Exception):
        # litellm wraps whatever broke the stream; classify the cause, not the wrapper (status 503)
        return map_exception(dep, e.original_exception, partial)  # type: ignore[attr-defined]
    msg = dep.scrub(str(getattr(e, "message", None) or e))[:500]
    if name in ("Timeout", "APITimeoutError"):
        return UpstreamError(504, "timeout", f"{dep.name}: {msg}", partial=partial)
    if name == "APIConnectionError":
        if "timeout" in msg.lower():
            return UpstreamError(504, "timeout", f"{dep.name}: {msg}", partial=partial)
        kind = "disconnect" if partial else "connect"
        return UpstreamError(502, kind, f"{dep.name}: {msg}", partial=partial)
    if name == "APIResponseValidationError":
        return UpstreamError(502, "bad_response", f"{dep.name}: {msg}", partial=partial)
    status = getattr(e, "status_code", None)
    if isinstance(status, int) and 400 <= status < 600:
        retry_after = None
        # litellm keeps the provider's headers in different places depending on the error path
        for headers in (getattr(e, "litellm_response_headers", None), getattr(e, "headers", None),
                        getattr(getattr(e, "response", None), "headers", None)):
            if headers:
                try:
                    retry_after = parse_retry_after(headers)
                except Exception:
                    retry_after = None
                if retry_after is not None:
                    break
        err = classify_status(dep, status, msg, retry_after)
        err.partial = partial
        return err
    return UpstreamError(502, "bad_response", f"{dep.name}: {name}: {msg}", partial=partial)


async def litellm_complete(litellm: Any, dep: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    try:
        resp = await litellm.acompletion(**_kwargs(dep, body))
    except Exception as e:
        raise map_exception(dep, e) from None
    return to_openai_response(resp)


async def litellm_stream(litellm: Any, dep: Deployment, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    kw = _kwargs(dep, body)
    kw["stream"] = True
    kw["stream_options"] = {"include_usage": True}
    yielded = False
    finished = False
    try:
        resp = await litellm.acompletion(**kw)
        async for chunk in resp:
            c = to_openai_chunk(chunk)
            for ch in c["choices"]:
                if ch.get("finish_reason"):
                    finished = True
            yield c
            yielded = True
    except (GeneratorExit, asyncio.CancelledError):
        raise
    except Exception as e:
        raise map_exception(dep, e, yielded) from None
    if not finished:
        raise UpstreamError(502, "disconnect", f"{dep.name}: stream ended before completion", partial=yielded)


async def litellm_embed(litellm: Any, dep: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    kw = {k: v for k, v in body.items() if k not in ("model",)}
    kw["model"] = dep.model
    if dep.api_base:
        kw["api_base"] = dep.api_base
    if dep.api_key:
        kw["api_key"] = dep.api_key
    kw["timeout"] = dep.timeout
    try:
        resp = await litellm.aembedding(**kw)
    except Exception as e:
        raise map_exception(dep, e) from None
    out = _dump(resp)
    return out if isinstance(out, dict) else dict(out)
