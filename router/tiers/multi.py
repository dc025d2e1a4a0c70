"""`n > 1` on tiers that cannot pass `n` upstream: n independent executions, one response.

The fast tier and passthrough send `n` to the provider (one call, n choices).
A reasoning step or a deliberation is a procedure, not one call, so each
choice is its own execution of the plan. Each execution gets an equal share of
the admitted reservation (the policy multiplied the plan's estimate by n), its
own call list, and its calls join the request's ledger when it ends, failed or
cancelled ones included.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, AsyncGenerator

from router.tiers.base import ExecContext, Plan
from router.tiers.fast import chunk_base, usage_chunk, usage_totals


def _subs(ctx: ExecContext, n: int) -> list[ExecContext]:
    body = {k: v for k, v in ctx.body.items() if k != "n"}
    return [dataclasses.replace(ctx, body=body, budget_usd=ctx.budget_usd / n, calls=[], transcript=[], outcome={})
            for _ in range(n)]


def _merge(ctx: ExecContext, subs: list[ExecContext]) -> None:
    """Each execution's calls join the request's; their outcomes (agreement, escalation) are kept per choice."""
    for s in subs:
        ctx.calls.extend(s.calls)
    if any(s.outcome for s in subs):
        ctx.outcome["choices"] = [s.outcome for s in subs]


class MultiChoice:
    """Wraps a tier executor; `n` comes from the request body."""

    def __init__(self, inner: Any, n: int):
        self.inner = inner
        self.n = n
        self.tier = inner.tier
        self.keepalive = getattr(inner, "keepalive", False)  # headers go out at once, as for the inner tier

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]:
        subs = _subs(ctx, self.n)
        try:
            results = await asyncio.gather(*(self.inner.complete(plan, s) for s in subs), return_exceptions=True)
        finally:
            _merge(ctx, subs)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        first: dict[str, Any] = results[0]  # type: ignore[assignment]
        choices = []
        for i, r in enumerate(results):
            ch = dict((r.get("choices") or [{}])[0])  # type: ignore[union-attr]
            ch["index"] = i
            choices.append(ch)
        resp = {**first, "choices": choices, "usage": usage_totals(ctx)}
        resp.pop("triage_transcript", None)
        return resp

    async def stream(self, plan: Plan, ctx: ExecContext) -> AsyncGenerator[dict[str, Any] | str, None]:
        subs = _subs(ctx, self.n)
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        DONE = object()

        async def pump(i: int, sub: ExecContext) -> None:
            agen = self.inner.stream(plan, sub)
            try:
                async for item in agen:
                    await queue.put((i, item))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises
                await queue.put((i, e))
                return
            finally:
                await agen.aclose()
            await queue.put((i, DONE))

        tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(subs)]
        template: dict[str, Any] | None = None
        model: str | None = None
        live = len(tasks)
        try:
            while live:
                i, item = await queue.get()
                if item is DONE:
                    live -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, str):
                    if i == 0:  # one execution's keep-alives are enough for the connection
                        yield item
                    continue
                choices = item.get("choices")
                if not choices:
                    continue  # per-execution usage / transcript chunks: one summed usage chunk at the end
                template = template or item
                model = item.get("model") or model
                out = {**chunk_base(ctx, template, item.get("model")),
                       "choices": [{**c, "index": i} for c in choices]}
                yield out
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            _merge(ctx, subs)
        yield usage_chunk(ctx, template, model)
