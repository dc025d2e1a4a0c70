"""Which chat requests the response cache may answer, and how a hit goes back to the client.

Cacheable: a request that opts in (`x-triage-cache: on`, or `metadata.triage_cache: true`) or, when the
config allows it, one with `temperature: 0`; never one that opts out (`x-triage-cache: off`). The
digest covers the whole body except what cannot change the answer (stream flags, metadata, user), so a
request whose model, messages, tools, response format, temperature, seed, n ... differ never gets
another request's answer. Errors are never stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, AsyncIterator

import orjson

from accounting import Admission, LedgerRecord, Principal
from router.http.asgi import JSONAnswer, SSEAnswer
from router.http.metering import cost_comment, cost_headers, usage_cost
from router.http.sse import DONE_EVENT, encode

log = logging.getLogger("triage.cache")

_VOLATILE = ("stream", "stream_options", "metadata", "user")
ON = frozenset({"on", "true", "1", "yes"})
OFF = frozenset({"off", "false", "0", "no", "no-store"})


def digest(headers: Any, raw: dict[str, Any], temperature_zero: bool) -> str | None:
    opt = (headers.get("x-triage-cache") or "").strip().lower()
    if opt in OFF:
        return None
    meta = raw.get("metadata")
    md: dict[str, Any] = meta if isinstance(meta, dict) else {}
    wanted = opt in ON or md.get("triage_cache") is True
    if not wanted and not (temperature_zero and raw.get("temperature") == 0 and (raw.get("n") or 1) == 1):
        return None
    body = {k: v for k, v in raw.items() if k not in _VOLATILE}
    try:
        blob = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return hashlib.sha256(blob).hexdigest()[:40]


def entry(resp: dict[str, Any], tier: str, model: str, cost_nusd: int, counterfactual_nusd: int) -> bytes:
    return orjson.dumps({"response": resp, "tier": tier, "model": model, "cost_nusd": cost_nusd,
                         "counterfactual_nusd": counterfactual_nusd})


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A streamed answer as the chat.completion it equals, for the cache; None when it is not plain text
    with one choice (tool-call streams and n > 1 are served live, not cached from a stream)."""
    text: list[str] = []
    finish = None
    first = None
    usage = None
    for c in chunks:
        first = first or c
        if c.get("usage") is not None:
            usage = c["usage"]
        for ch in c.get("choices") or ():
            if ch.get("index", 0) != 0:
                return None
            d = ch.get("delta") or {}
            if d.get("tool_calls") or d.get("function_call"):
                return None
            if d.get("content"):
                text.append(d["content"])
            finish = ch.get("finish_reason") or finish
    if first is None or finish is None:
        return None
    return {"id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
            "model": first.get("model"), "choices": [{"index": 0, "finish_reason": finish,
                                                      "message": {"role": "assistant", "content": "".join(text)}}],
            "usage": usage or {}}


def hit_headers(rid: str, cached: dict[str, Any], remaining: str | None) -> dict[str, str]:
    h = {"x-request-id": rid, "x-triage-cache": "hit", "x-triage-tier": cached["tier"], "x-triage-model": cached["model"],
         **cost_headers(0), "x-triage-cache-saved-usd": f"{cached['cost_nusd'] / 1e9:.9f}",
         "x-triage-decision": "cache hit (exact match)"}
    if remaining is not None:
        h["x-triage-budget-remaining-usd"] = remaining
    return h


def _fresh(cached: dict[str, Any], rid: str) -> dict[str, Any]:
    resp = dict(cached["response"])
    resp["id"] = "chatcmpl-" + rid.replace("-", "")[:29]
    resp["created"] = int(time.time())
    usage = dict(resp.get("usage") or {})
    usage_cost(usage, 0)
    resp["usage"] = usage
    return resp


def respond(cached: dict[str, Any], rid: str, stream: bool, include_usage: bool,
            headers: dict[str, str]) -> JSONAnswer | SSEAnswer:
    resp = _fresh(cached, rid)
    if not stream:
        return JSONAnswer(orjson.dumps(resp), headers)
    return SSEAnswer(_as_stream(resp, include_usage, rid), headers)


async def _as_stream(resp: dict[str, Any], include_usage: bool, rid: str) -> AsyncIterator[bytes]:
    base = {"id": resp["id"], "object": "chat.completion.chunk", "created": resp["created"], "model": resp.get("model")}
    for ch in resp.get("choices") or ():
        msg = ch.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg["tool_calls"])]
        yield encode({**base, "choices": [{"index": ch.get("index", 0), "delta": delta, "finish_reason": None}]})
        yield encode({**base, "choices": [{"index": ch.get("index", 0), "delta": {}, "finish_reason": ch.get("finish_reason")}]})
    if include_usage:
        yield encode({**base, "choices": [], "usage": resp.get("usage") or {}})
    yield cost_comment(rid, 0)  # like every stream: its cost (0) and the ledger id
    yield DONE_EVENT


# ---------------------------------------------------------------- the cache as the chat pipeline uses it
# Redis trouble here never fails a request: the cache is then a miss, and a lock it could not release
# expires on its own.

async def lookup(st: Any, tenant: str, ck: str, rid: str, wait_s: float) -> tuple[dict[str, Any] | None, bool]:
    """(the cached answer or None, whether this request computes it)."""
    cache = st.cache

    async def lead() -> tuple[bytes | None, bool]:
        if not await cache.lead(tenant, ck, rid):
            return None, False
        val = await cache.get(tenant, ck)  # a leader may have stored it between our miss and our lock
        if val is None:
            return None, True
        await cache.release(tenant, ck, rid)
        return val, False

    try:
        val = await cache.get(tenant, ck)
        if val is None:
            val, leader = await lead()
            if leader:
                return None, True
            if val is None:
                val = await cache.wait(tenant, ck, wait_s)  # single flight: another request is computing it
            if val is None:
                val, leader = await lead()
                if val is None:
                    return None, leader
        return orjson.loads(val), False
    except Exception:
        log.warning("response cache unavailable; answering without it")
        return None, False


async def store(st: Any, tenant: str, ck: str, rid: str, value: bytes) -> None:
    try:
        await st.cache.store(tenant, ck, value)
    except Exception:
        log.warning("response cache store failed for request %s", rid)
        await release(st, tenant, ck, rid)


async def release(st: Any, tenant: str, ck: str, rid: str) -> None:
    if st.cache is None:
        return
    try:
        await st.cache.release(tenant, ck, rid)
    except Exception:
        log.warning("response cache release failed; its lock expires on its own")


async def serve_hit(st: Any, client_rid: str | None, cached: dict[str, Any], principal: Principal, req: Any,
                    rid: str, wf: Any, messages: list[Any], t0: float) -> JSONAnswer | SSEAnswer:
    """A cache hit: no upstream call, cost 0, booked in the ledger with the saving it made."""
    from router.workflow import observe_workflow  # noqa: PLC0415 - workflow imports this module's layer

    rec = LedgerRecord(
        request_id=rid, client_request_id=client_rid, key_id=principal.key_id,
        tenant=principal.tenant, virtual_model=req.model, tier=cached["tier"], model=cached["model"],
        reason="cache hit (exact match)", calls=[], cost_nusd=0, cost_usd=0.0,
        counterfactual_nusd=int(cached.get("counterfactual_nusd") or 0), counterfactual_method="cache-hit",
        cache_hit=True, cache_saved_nusd=int(cached.get("cost_nusd") or 0), streamed=bool(req.stream),
        latency_ms=(time.perf_counter() - t0) * 1000, status="ok",
    )
    if wf is not None:
        await observe_workflow(st, wf, rec, messages, [])
    adm = Admission(request_id=rid, plan_index=0, reserved_usd=0.0, tenant=principal.tenant,
                    key_id=principal.key_id, tier=rec.tier, model=rec.model, store_prompts=principal.store_prompts)
    try:
        await st.accountant.settle(adm, rec)
    except Exception:
        log.exception("booking cache hit %s failed", rid)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return respond(cached, rid, bool(req.stream), include_usage, hit_headers(rid, cached, None))


async def settle_lead(st: Any, tenant: str, ck: str, rec: LedgerRecord, ok: bool, resp: dict[str, Any] | None,
                      chunks: list[dict[str, Any]] | None) -> None:
    """The single-flight leader stores a good answer (waiters then read it) or lets them go."""
    answer = resp if resp is not None else (assemble(chunks) if chunks else None)
    if ok and answer is not None and rec.cost_nusd is not None:
        await store(st, tenant, ck, rec.request_id,
                    entry(answer, rec.tier, rec.model, rec.cost_nusd, rec.counterfactual_nusd or rec.cost_nusd))
    else:
        await release(st, tenant, ck, rec.request_id)
