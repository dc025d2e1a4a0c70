"""Reading a request: the body within its size limit, JSON, the per-query cost cap, output caps."""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.requests import Request

from router.http.errors import bad_request, too_large

_loads = orjson.loads


async def read_body(request: Request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            if int(cl) > limit:
                raise too_large(limit)
        except ValueError:
            raise bad_request("Invalid Content-Length header.") from None
        return await request.body()
    # Chunked uploads: count as we read so a huge body is cut off, not buffered.
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: Request, limit: int) -> Any:
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    try:
        return _loads(body)
    except orjson.JSONDecodeError as e:
        raise bad_request(f"Request body is not valid JSON: {e.msg} at position {e.pos}.", code="invalid_json") from None


def parse_cap(headers: Any, raw: dict[str, Any], policy_cap: float | None) -> float | None:
    """A request may lower its per-query cap, never raise it above policy. `headers`: anything with `.get`."""
    asked: Any = headers.get("x-triage-max-cost")
    param = "x-triage-max-cost"
    if asked is None:
        md = raw.get("metadata")
        if isinstance(md, dict) and "max_cost_usd" in md:
            asked, param = md["max_cost_usd"], "metadata.max_cost_usd"
    if asked is None:
        return policy_cap
    if param != "x-triage-max-cost" and (isinstance(asked, bool) or not isinstance(asked, (int, float))):
        raise bad_request(f"'{param}' must be a JSON number of US dollars.", param=param)
    try:
        val = float(asked)
    except (TypeError, ValueError, OverflowError):
        raise bad_request(f"'{param}' must be a number of US dollars.", param=param) from None
    if not (math.isfinite(val) and val > 0):
        raise bad_request(f"'{param}' must be a positive, finite number of US dollars.", param=param)
    return val if policy_cap is None else min(val, policy_cap)


def check_output_cap(asked: int, param: str, models: list[str] | None, snap: Any) -> None:
    """A concrete model's known output limit is a hard ceiling (OpenAI refuses past it too); for a
    virtual model, past what every configured model can produce is refused, and a tier's own lower
    cap is reported in x-triage-max-tokens rather than applied silently."""
    caps = snap.prices.output_caps
    if models is None:
        models = snap.model_ids
        limits = [caps.get(m) for m in models]
        if not limits or any(c is None for c in limits):
            return  # some model's limit is unknown: nothing to refuse on
        limit = max(c for c in limits if c is not None)
    else:
        limit = caps.get(models[0])
        if limit is None:
            return
    if asked > limit:
        raise bad_request(f"{param} is too large: {asked}. This model supports at most {limit} completion tokens.",
                          param=param, code="invalid_value")
