"""POST /v1/embeddings: a configured model, admitted, metered and settled like chat.

Embeddings are priced on input only (the model's input price; output tokens are
zero). The hold is the input-token estimate at that price; the settled cost is
the provider's reported `prompt_tokens`. `triage/*` models are chat routers
and have no embedding meaning, so they are refused with a clear 400.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from accounting import BudgetExceeded, PlanEstimate, UpstreamCall
from accounting.models import AccountingUnavailable, Usage
from accounting.tokens import count_text_tokens
from router.config import VIRTUAL_MODELS
from router.http.auth import authenticate
from router.http.chat import ChatHandler, error_status, read_json
from router.http.errors import ProxyError, bad_request, budget_exceeded, not_found, unavailable
from router.http.meta import RequestMeta
from router.http.metering import usage_cost
from router.tiers.base import Decision, ExecContext, Plan
from router.upstream import UpstreamError

MAX_INPUTS = 2048


def input_tokens(inp: Any) -> int:
    """Upper-bound-ish token count of an embeddings `input`: text, list of texts, or token arrays."""
    if isinstance(inp, str):
        return count_text_tokens(inp) + 1
    if isinstance(inp, list):
        if not inp:
            raise bad_request("'input' must not be empty.", param="input")
        if len(inp) > MAX_INPUTS:
            raise bad_request(f"'input' has more than {MAX_INPUTS} items.", param="input")
        if all(isinstance(x, int) for x in inp):
            return len(inp)
        total = 0
        for x in inp:
            if isinstance(x, str):
                total += count_text_tokens(x) + 1
            elif isinstance(x, list) and all(isinstance(t, int) for t in x):
                total += len(x)
            else:
                raise bad_request("'input' items must be strings or token arrays.", param="input")
        return total
    raise bad_request("'input' must be a string, a list of strings or token arrays.", param="input")


async def embeddings(request: Request, chat: ChatHandler) -> Response:
    st = chat.state
    rid: str = request.scope["triage.request_id"]
    snap = st.snapshot
    t0 = time.perf_counter()
    principal = await authenticate(request, st)
    raw = await read_json(request, snap.config.server.max_body_bytes)
    if not isinstance(raw, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyError(400, "Missing required parameter: 'model'.", "invalid_request_error", "missing_required_parameter", "model")
    if "input" not in raw:
        raise ProxyError(400, "Missing required parameter: 'input'.", "invalid_request_error", "missing_required_parameter", "input")
    if model in VIRTUAL_MODELS:
        raise bad_request(f"'{model}' routes chat; embeddings need a configured embedding model by name.", param="model")
    if model not in snap.deployments:
        raise not_found(f"The model '{model}' does not exist or you do not have access to it.", "model")
    tokens = input_tokens(raw["input"])
    price = snap.prices.price(model)
    estimate = tokens * max(price.input, price.cache_write)
    plan = Plan(tier="passthrough", models=snap.config.chain([model]), max_tokens=1, estimate_usd=estimate,
                prompt_tokens=tokens)
    decision = Decision(plans=[plan], complexity=0.0, signals=["embeddings"], reason=f"embeddings {model}")
    try:
        adm = await st.accountant.admit(principal, rid, [PlanEstimate(
            tier="passthrough", model=model, estimate_usd=estimate)])
    except BudgetExceeded as e:
        raise budget_exceeded(e.message, e.retryable) from None
    except AccountingUnavailable:
        raise unavailable("Budget service unavailable; refusing to spend without admission.", "accounting_unavailable") from None
    ctx = ExecContext(upstream=st.upstream, deployments=snap.deployments, prices=snap.prices, request_id=rid,
                      body=raw, budget_usd=adm.reserved_usd)
    meta = RequestMeta(principal, model, decision, plan, adm, t0, [], snap.top_tier, snap)
    meta.client_rid = request.scope.get("triage.client_request_id")
    last: UpstreamError | None = None
    for name in plan.models:
        for dep in snap.deployments.get(name, ()):
            t1 = time.perf_counter()
            try:
                resp = await st.upstream.embed(dep, raw)
            except UpstreamError as e:
                last = e
                ctx.calls.append(UpstreamCall(model=name, status=f"{e.upstream_status or e.status} {e.kind}",
                                              latency_ms=(time.perf_counter() - t1) * 1000))
                if not e.retryable:
                    break
                continue
            u = resp.get("usage") or {}
            pt = int(u.get("prompt_tokens") or u.get("total_tokens") or 0)
            estimated = pt == 0
            pt = pt or tokens
            usage = Usage(prompt_tokens=pt, completion_tokens=0)
            cost = ctx.prices.cost(name, usage)
            ctx.calls.append(UpstreamCall(model=name, prompt_tokens=pt, completion_tokens=0, cost_usd=cost,
                                          latency_ms=(time.perf_counter() - t1) * 1000, status="ok",
                                          estimated=estimated))
            resp["model"] = name
            nusd = ctx.spent_nusd()
            resp["usage"] = {"prompt_tokens": pt, "total_tokens": pt}
            usage_cost(resp["usage"], nusd)
            await chat._finish(ctx, meta, status="ok")
            return Response(orjson.dumps(resp), media_type="application/json",
                            headers=meta.headers(rid, nusd, ctx, name))
        if last is not None and not last.retryable:
            break
    await chat._finish(ctx, meta, status=f"error:{last.kind}" if last else "error")
    if last is not None:
        raise error_status(last)
    raise unavailable(f"No deployment of '{model}' could serve the request.", "upstream_unavailable")
