"""fast (and passthrough): one answer from the tier's model chain, no thinking knobs.

Also home of the helpers every executor shares to shape its output like a
single upstream call: usage summed over every attempt, `usage.cost` included.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any, AsyncGenerator, ClassVar

from router.tiers.base import ExecContext, Plan, TierConfig
from router.tiers.table import RateInfo, SingleCallTable
from router.upstream.chain import Step, Thinking, complete_chain, prompt_bound, stream_chain


def usage_totals(ctx: ExecContext) -> dict[str, Any]:
    pt = ct = cached = reasoning = 0
    for c in ctx.calls:
        pt += c.prompt_tokens
        ct += c.completion_tokens
        cached += c.cached_tokens
        reasoning += c.reasoning_tokens
    return {
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "total_tokens": pt + ct,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "cost": round(ctx.spent_usd(), 10),
    }


def base_body(ctx: ExecContext) -> dict[str, Any]:
    b = dict(ctx.body)
    b.pop("stream", None)
    b.pop("stream_options", None)
    b.pop("triage", None)
    return b


def remaining(ctx: ExecContext) -> float:
    return ctx.budget_usd - ctx.spent_usd()


def chunk_base(ctx: ExecContext, template: dict[str, Any] | None, model: str | None) -> dict[str, Any]:
    t = template or {}
    return {
        "id": t.get("id") or f"chatcmpl-{ctx.request_id}",
        "object": "chat.completion.chunk",
        "created": t.get("created") or int(time.time()),
        "model": model or t.get("model") or "",
    }


def message_chunks(base: dict[str, Any], message: dict[str, Any], finish: str | None) -> list[dict[str, Any]]:
    """A finished message as stream chunks: role, content, each tool call whole (with its index), finish."""
    def chunk(delta: dict[str, Any], fin: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": fin}]}

    calls = message.get("tool_calls") or []
    content = message.get("content")
    out = [chunk({"role": "assistant", "content": None if calls and not content else ""})]
    if isinstance(content, str) and content:
        out.append(chunk({"content": content}))
    for i, c in enumerate(calls):
        fn = c.get("function") or {}
        out.append(chunk({"tool_calls": [{"index": i, "id": c.get("id"), "type": c.get("type", "function"),
                                          "function": {"name": fn.get("name"), "arguments": fn.get("arguments") or ""}}]}))
    out.append(chunk({}, finish or ("tool_calls" if calls else "stop")))
    return out


def usage_chunk(ctx: ExecContext, template: dict[str, Any] | None, model: str | None) -> dict[str, Any]:
    return {**chunk_base(ctx, template, model), "choices": [], "usage": usage_totals(ctx)}


class SingleCall:
    """One answer over a fallback chain; effort / think-then-answer come from the plan."""

    tier = "fast"

    def thinking(self, plan: Plan) -> Thinking | None:
        """The per-attempt think-then-answer hook; only the reasoning tier has one."""
        return None

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]:
        body = base_body(ctx)
        step = Step()
        resp = await complete_chain(
            ctx, plan.models, body, max_tokens=plan.max_tokens,
            prompt=prompt_bound(ctx, body["messages"], plan.prompt_tokens), allowance=remaining(ctx),
            effort=plan.reasoning_effort, think=self.thinking(plan), step=step,
        )
        resp["model"] = step.model
        resp["usage"] = usage_totals(ctx)
        return resp

    async def stream(self, plan: Plan, ctx: ExecContext) -> AsyncGenerator[dict[str, Any] | str, None]:
        body = base_body(ctx)
        step = Step()
        template: dict[str, Any] | None = None
        # aclosing: a client leaving closes this generator; the inner ones must close (and bill) now, not at GC.
        async with aclosing(stream_chain(
            ctx, plan.models, body, max_tokens=plan.max_tokens,
            prompt=prompt_bound(ctx, body["messages"], plan.prompt_tokens), allowance=remaining(ctx),
            effort=plan.reasoning_effort, think=self.thinking(plan), step=step,
        )) as chunks:
            async for ch in chunks:
                if template is None:
                    template = ch
                ch["model"] = step.model
                yield ch
        yield usage_chunk(ctx, template, step.model)


class FastConfig(TierConfig):
    """models, max_tokens, quality: nothing else (no effort, no strategy)."""


class FastTier(SingleCall):
    name: ClassVar[str] = "fast"
    tier = "fast"
    level: ClassVar[int | None] = 0
    default_quality: ClassVar[float] = 0.70
    config_model: ClassVar[type[TierConfig]] = FastConfig
    keepalive: ClassVar[bool] = False

    def table(self, spec: TierConfig, rate: dict[str, RateInfo]) -> SingleCallTable:
        return SingleCallTable(self, spec, rate)


# The executor's historical name.
FastExecutor = FastTier


class PassthroughExecutor(SingleCall):
    tier = "passthrough"
