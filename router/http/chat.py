"""POST /v1/chat/completions: parse → auth → classify → decide → admit → execute → meter.

Every path out of here either settles or releases the admission exactly once,
so a budget hold never leaks and a request is never billed twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from contextlib import aclosing
from typing import Any, AsyncGenerator, AsyncIterator

import orjson
from starlette.requests import Request

from accounting import BudgetExceeded, LedgerRecord, PlanEstimate, Principal, UpstreamCall
from accounting.models import AccountingUnavailable, Usage
from accounting.tokens import count_prompt_tokens, count_text_tokens, estimate_prompt_tokens
from router import policy, shadow
from router.config import VIRTUAL_MODELS
from router.http import caching
from router.http.asgi import JSONAnswer, SSEAnswer, scope_headers
from router.http.auth import authenticate_headers
from router.http.errors import (
    ProxyError,
    budget_exceeded,
    not_found,
    unavailable,
    upstream_failed,
)
from router.http.meta import RequestMeta
from router.http.metering import (
    HoldRenewer,
    cost_comment,
    record_refusal,
    refusal_below_cap,
    usage_cost,
)
from router.http.request import check_output_cap, parse_cap, parse_json, read_body, read_json
from router.http.schemas import validate_chat
from router.http.sse import DONE_EVENT, encode
from router.policy import N_NATIVE, scale_for_choices
from router.session import pin_shared, shared_tier
from router.state import AppState
from router.tiers.base import Decision, ExecContext
from router.tiers.multi import MultiChoice
from router.tiers.registry import EXECUTORS
from router.upstream import UpstreamError
from router.workflow import Workflow, identify, observe_workflow, workflow_left

log = logging.getLogger("triage.chat")
_loads = orjson.loads

__all__ = ["ChatHandler", "check_output_cap", "error_status", "parse_cap", "read_body", "read_json"]


def error_status(e: UpstreamError) -> ProxyError:
    if e.kind == "rate_limited":
        return ProxyError(429, f"Upstream rate limited: {e.message}", "rate_limit_error", "upstream_rate_limited",
                          headers={"retry-after": str(int((e.retry_after or 1) + 0.999))})
    if e.kind == "timeout":
        return upstream_failed(f"Upstream timed out: {e.message}", 504, "upstream_timeout")
    if e.kind == "client_error":
        return ProxyError(e.status if 400 <= e.status < 500 else 400, e.message, "invalid_request_error", "upstream_rejected")
    return upstream_failed(f"Upstream failed ({e.kind}): {e.message}", 502, f"upstream_{e.kind}")


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    try:
        if first is not None:
            yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


Answer = JSONAnswer | SSEAnswer


class ChatHandler:
    __slots__ = ("state", "holds")

    def __init__(self, state: AppState):
        self.state = state
        self.holds = HoldRenewer()

    async def __call__(self, request: Request, raw: dict[str, Any] | None = None) -> Answer:
        """`raw`: a chat body another endpoint (completions, responses, messages) translated its request
        into; it then runs through exactly this pipeline: auth, classify, decide, admit, execute, settle."""
        t0 = time.perf_counter()
        hdrs = scope_headers(request.scope)
        principal = await authenticate_headers(hdrs, self.state)
        if raw is None:
            raw = await read_json(request, self.state.snapshot.config.server.max_body_bytes)
        return await self._handle(request.scope, hdrs, principal, raw, t0)

    async def serve(self, scope: MutableMapping[str, Any], body: bytes) -> Answer:
        """POST /chat/completions from the app's ASGI wrapper, which has read the body within its limit."""
        t0 = time.perf_counter()
        hdrs = scope_headers(scope)
        principal = await authenticate_headers(hdrs, self.state)
        return await self._handle(scope, hdrs, principal, parse_json(body), t0)

    async def _handle(self, scope: MutableMapping[str, Any], hdrs: dict[str, str], principal: Principal, raw: Any,
                      t0: float) -> Answer:
        st = self.state
        rid: str = scope["triage.request_id"]
        snap = st.snapshot
        cfg = snap.config
        req = validate_chat(raw)

        model = req.model
        forced_tier: str | None = None
        concrete: str | None = None
        if model in VIRTUAL_MODELS:
            forced_tier = VIRTUAL_MODELS[model]
            if forced_tier is not None and forced_tier not in cfg.tiers:
                raise not_found(f"The model '{model}' is not available: tier '{forced_tier}' is not configured.", "model")
        elif model in snap.deployments:
            concrete = model
        else:
            raise not_found(f"The model '{model}' does not exist or you do not have access to it.", "model")

        asked = req.max_completion_tokens or req.max_tokens
        if asked is not None:
            check_output_cap(asked, "max_completion_tokens" if req.max_completion_tokens else "max_tokens",
                             [concrete] if concrete else None, snap)
        messages = raw["messages"]
        wf = identify(hdrs, raw)
        ck: str | None = None
        if st.cache is not None and cfg.cache.enabled:
            ck = caching.digest(hdrs, raw, cfg.cache.temperature_zero)
            if ck is not None:
                cached, leader = await caching.lookup(st, principal.tenant, ck, rid, cfg.cache.single_flight_wait_s)
                if cached is not None:
                    return await caching.serve_hit(st, scope.get("triage.client_request_id"), cached, principal,
                                                   req, rid, wf, messages, t0)
                if not leader:
                    ck = None  # another request is computing it and gave up or timed out: answer, don't cache
        if ck is None:
            return await self._serve(scope, hdrs, rid, principal, raw, req, forced_tier, concrete, wf, None, asked, t0)
        try:
            return await self._serve(scope, hdrs, rid, principal, raw, req, forced_tier, concrete, wf, ck, asked, t0)
        except BaseException:
            await caching.release(st, principal.tenant, ck, rid)
            raise

    async def _serve(self, scope: MutableMapping[str, Any], hdrs: dict[str, str], rid: str, principal: Principal,
                     raw: dict[str, Any], req: Any, forced_tier: str | None, concrete: str | None,
                     wf: Workflow | None, ck: str | None, asked: int | None, t0: float) -> Answer:
        """classify -> decide -> admit -> execute -> meter, for a request the cache did not answer."""
        st = self.state
        snap = st.snapshot
        cfg = snap.config
        model = req.model
        messages = raw["messages"]
        tc = time.perf_counter()
        cls = snap.classifiers.for_tenant(principal.tenant).classify(messages)
        obs = st.obs
        if obs is not None:
            obs.classified(time.perf_counter() - tc)
        cap = parse_cap(hdrs, raw, principal.max_cost_per_query)
        tools = raw.get("tools")
        prompt_tokens = estimate_prompt_tokens(messages, tools if isinstance(tools, list) else None)
        session = hdrs.get("x-triage-session")
        pinned = None
        if session and forced_tier is None and concrete is None:
            # the local map saves a round trip on this worker's repeat turns; Redis shares pins across workers
            pinned = st.sessions.get(principal.tenant, session) or await shared_tier(st.accountant, principal.tenant, session)
        n = req.n or 1
        # n choices share the cap: knobs are fitted to cap/n per choice, then every hold is scaled by n
        try:
            decision: Decision = policy.decide(
                req, raw, cls, cap / n if (cap is not None and n > 1) else cap, cfg, snap.prices, prompt_tokens,
                forced_tier=forced_tier, concrete_model=concrete, tables=snap.policy_tables, pinned_tier=pinned,
            )
        except ProxyError as e:
            if e.code == "cost_cap_below_minimum":  # denied demand too: ledgered like a budget refusal
                await refusal_below_cap(st.accountant, principal, rid, req.model, cls.complexity, e.message,
                                        wf.id if wf is not None else "")
            raise
        if n > 1:
            decision.cap_usd = cap
            scale_for_choices(decision, n)
        estimates = [PlanEstimate(tier=p.tier, model=p.primary_model, estimate_usd=p.estimate_usd)
                     for p in decision.plans]
        try:
            wcap = (wf.max_cost_usd or cfg.workflows.default_max_cost_usd) if wf is not None else None
            adm = await st.accountant.admit(principal, rid, estimates,
                                            workflow=(wf.id, wcap) if (wf is not None and wcap) else None)
        except BudgetExceeded as e:
            why = "max_cost_per_query" if e.scope == "per-query cap" else "budget_exceeded"
            if obs is not None:
                obs.refused(why, rid, principal.tenant, principal.key_id, model, t0, scope=e.scope)
            await record_refusal(st.accountant, principal, rid, req.model, decision, why, e.message,
                                 wf.id if wf is not None else "")
            raise budget_exceeded(e.message, e.retryable) from None
        except AccountingUnavailable:
            if obs is not None:
                obs.refused("accounting_unavailable", rid, principal.tenant, principal.key_id, model, t0)
            raise unavailable("Budget service unavailable; refusing to spend without admission.", "accounting_unavailable") from None
        plan = decision.plans[adm.plan_index]
        if session and plan.tier in cfg.tiers and concrete is None:
            st.sessions.pin(principal.tenant, session, plan.tier, cfg.policy.session_ttl_s)
            st.spawn(pin_shared(st.accountant, principal.tenant, session, plan.tier, cfg.policy.session_ttl_s))

        want_transcript = bool((raw.get("triage") or {}).get("transcript")) if isinstance(raw.get("triage"), dict) else False
        fwd = dict(raw)
        fwd.pop("triage", None)
        ctx = ExecContext(
            upstream=st.upstream, deployments=snap.deployments, prices=snap.prices, request_id=rid,
            body=fwd, budget_usd=plan.estimate_usd if adm.failed_open else adm.reserved_usd, want_transcript=want_transcript,
            num_retries=cfg.num_retries,
            affinity=f"{principal.tenant}\x00{wf.id}" if (wf is not None and cfg.workflows.affinity) else None,
        )
        meta = RequestMeta(principal, req.model, decision, plan, adm, t0, messages, snap.top_tier, snap)
        meta.client_rid = scope.get("triage.client_request_id")
        meta.workflow = wf.id if wf is not None else ""
        meta.wf = wf
        meta.cache_key = ck
        self.holds.add(st.accountant, adm)
        meta.asked_tokens = asked
        if snap.config.shadow.for_tenant(principal.tenant)[1] > 0:
            meta.shadow_args = (req, fwd, cls, prompt_tokens)
        meta.clf_version = cls.version
        executor: Any = EXECUTORS[plan.tier]
        if n > 1 and plan.tier not in N_NATIVE:
            executor = MultiChoice(executor, n)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            items = executor.stream(plan, ctx)
            first: Any = None
            if not getattr(executor, "keepalive", False):
                # Wait for the first chunk before sending headers, so a failure that happens before
                # any byte (all fallbacks 5xx, 429, budget) gets its real HTTP status, not 200 + in-band.
                # Tiers that stream keep-alives while they work (deliberate) send headers at once.
                try:
                    first = await items.__anext__()
                except StopAsyncIteration:
                    first = None
                except (UpstreamError, ProxyError) as e:
                    await items.aclose()
                    await self._finish(ctx, meta, status=f"error:{e.kind}" if isinstance(e, UpstreamError) else "error",
                                       streamed=True)
                    raise (error_status(e) if isinstance(e, UpstreamError) else e) from None
            gen = self._stream(items, first, ctx, meta, include_usage)
            h = meta.headers(rid, None)
            if adm.workflow_scope and wcap:
                h = await workflow_left(st, adm, principal.tenant, wf, h, wcap)
            return SSEAnswer(gen, h)

        try:
            resp = await executor.complete(plan, ctx)
        except asyncio.CancelledError:
            st.spawn(self._finish(ctx, meta, status="cancelled", partial=True))
            raise
        except UpstreamError as e:
            await self._finish(ctx, meta, status=f"error:{e.kind}")
            raise error_status(e) from None
        except ProxyError:
            await self._finish(ctx, meta, status="error")
            raise
        nusd = ctx.spent_nusd()
        usage_cost(resp.setdefault("usage", {}), nusd)
        answer = shadow.answer_text(resp) if meta.shadow_args is not None else None  # a shadow run's, if sampled
        # the answer leaves once its settle is written to Redis, not once Redis has run it: a client that
        # reads its spend next still finds it (Redis takes commands in arrival order); the headers of a
        # workflow-capped answer read the workflow's spend, so that one waits for the settle itself
        await self._finish(ctx, meta, status="ok", answer=answer, resp=resp, early=not adm.workflow_scope)
        h = meta.headers(rid, nusd, ctx, resp.get("model"))
        if adm.workflow_scope and wcap:
            h = await workflow_left(st, adm, principal.tenant, wf, h, wcap)
        return JSONAnswer(orjson.dumps(resp), h)

    async def _stream(self, items: AsyncGenerator[Any, None], first: Any, ctx: ExecContext, meta: "RequestMeta",
                      include_usage: bool) -> AsyncIterator[bytes]:
        done = False
        status = "ok"
        streamed_text: list[str] = []
        keep: list[dict[str, Any]] | None = [] if meta.cache_key is not None else None
        try:
            # aclosing: on a client disconnect the executor's upstream stream closes now and bills its partial call
            async with aclosing(_prepend(first, items)) as all_items:
                async for item in all_items:
                    if isinstance(item, str):
                        yield b": " + item.encode() + b"\n\n"
                        continue
                    if meta.ttft_ms is None:
                        meta.ttft_ms = (time.perf_counter() - meta.t0) * 1000
                    if keep is not None:
                        keep.append(item)
                    choices = item.get("choices")
                    if choices:
                        delta = choices[0].get("delta") or {}
                        c = delta.get("content")
                        if c:
                            streamed_text.append(c)
                        for tc in delta.get("tool_calls") or ():  # forwarded tool calls are billable output too
                            fn = tc.get("function") or {}
                            streamed_text.append((fn.get("name") or "") + (fn.get("arguments") or ""))
                    if item.get("usage") is not None and not choices:
                        if not include_usage:
                            continue
                        usage_cost(item["usage"], ctx.spent_nusd())
                    elif item.get("usage") is not None and not include_usage:
                        item = dict(item)
                        item.pop("usage", None)
                    yield encode(item)
            done = True
            # every stream carries its cost and the ledger id, include_usage or not
            yield cost_comment(ctx.request_id, ctx.spent_nusd())
            yield DONE_EVENT
        except UpstreamError as e:
            status = f"error:{e.kind}"
            err = error_status(e)
            yield encode(err.body())
            yield cost_comment(ctx.request_id, ctx.spent_nusd())
            yield DONE_EVENT
        except ProxyError as e:
            status = "error"
            yield encode(e.body())
            yield cost_comment(ctx.request_id, ctx.spent_nusd())
            yield DONE_EVENT
        finally:
            partial = not done and status == "ok"
            if partial:
                status = "cancelled"
                self._bill_unmetered(ctx, meta, "".join(streamed_text))
            # A client disconnect cancels this task; settling must not be cancelled with it.
            self.state.spawn(self._finish(ctx, meta, status=status, partial=partial, streamed=True,
                                          answer="".join(streamed_text) if done else None,
                                          chunks=keep if done else None))

    def _bill_unmetered(self, ctx: ExecContext, meta: "RequestMeta", text: str) -> None:
        """The client left and no executor recorded the call that was streaming: bill what we forwarded,
        estimated. Not when the last call finished (the client left after the last content chunk but
        before [DONE]): that call is already billed, and another would be a phantom."""
        if any(c.status == "cancelled" for c in ctx.calls) or (ctx.calls and ctx.calls[-1].status == "ok"):
            return
        model = meta.plan.primary_model
        comp = count_text_tokens(text)
        u = Usage(prompt_tokens=count_prompt_tokens(meta.messages), completion_tokens=comp)
        ctx.calls.append(UpstreamCall(model=model, prompt_tokens=u.prompt_tokens, completion_tokens=comp,
                                      cost_usd=ctx.prices.cost(model, u), status="cancelled", estimated=True))

    async def _finish(self, ctx: ExecContext, meta: "RequestMeta", *, status: str, partial: bool = False,
                      streamed: bool = False, answer: str | None = None, resp: dict[str, Any] | None = None,
                      chunks: list[dict[str, Any]] | None = None, early: bool = False) -> None:
        """Meter the request. ``early``: return once the settle is written to Redis and finish the rest
        (its reply, a spool on failure, metrics, shadow, cache) in a task that outlives the request."""
        self.holds.discard(meta.adm)
        acct = self.state.accountant
        lengths = acct.fresh_top_lengths(meta.principal.tenant)
        meta.lengths = lengths if lengths is not None else await acct.top_lengths(meta.principal.tenant)
        rec = meta.record(ctx, status=status, partial=partial, streamed=streamed)
        if meta.wf is not None:
            await observe_workflow(self.state, meta.wf, rec, meta.messages, ctx.calls)
        if early and ctx.calls:
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.state.spawn(self._settled(ctx, meta, rec, sent, status, partial, answer, resp, chunks))
            await asyncio.shield(sent)  # a cancelled request must not cancel its own metering
            return
        await self._settled(ctx, meta, rec, None, status, partial, answer, resp, chunks)

    async def _settled(self, ctx: ExecContext, meta: "RequestMeta", rec: LedgerRecord, sent: asyncio.Future[None] | None,
                       status: str, partial: bool, answer: str | None, resp: dict[str, Any] | None,
                       chunks: list[dict[str, Any]] | None) -> None:
        try:
            if ctx.calls:
                await self.state.accountant.settle(meta.adm, rec, sent)
            else:
                await self.state.accountant.release(meta.adm, rec)
        except Exception:  # metering must never turn a served answer into an error
            log.exception("settling request %s failed", ctx.request_id)
        finally:
            if sent is not None and not sent.done():
                sent.set_result(None)
        obs = self.state.obs
        if obs is not None:
            obs.finished(rec, meta.adm, meta.t0)
        if meta.shadow_args is not None and status == "ok" and answer is not None:
            req, fwd, cls, pt = meta.shadow_args
            self.state.spawn(shadow.after_serve(self.state, meta.snap, meta.principal, meta.plan.tier,
                                                meta.decision.complexity, ctx.request_id, req, fwd, cls, pt,
                                                meta.messages, answer, rec.cost_nusd or ctx.spent_nusd()))
        if meta.cache_key is not None:
            await caching.settle_lead(self.state, meta.principal.tenant, meta.cache_key, rec,
                                      status == "ok" and not partial, resp, chunks)
