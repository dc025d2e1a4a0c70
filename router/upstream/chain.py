"""Calling one logical step (an answer, an agent, an aggregator) over a model chain.

Retries and fallbacks are bounded (MAX_ATTEMPTS), back off with full jitter
only when re-trying a deployment already tried (switching to another provider
costs no wait), honour retry-after, and put failing deployments in a cooldown
that later requests respect, so a dead provider is skipped instead of being
paid for with latency on every request.

Budget: every attempt is sized so that what this step has already spent plus
the attempt's worst case (prompt bound x input price + max_tokens x output
price) stays within the step's allowance. That is what makes "the cost never
exceeds the reservation" hold across fallbacks to a dearer model.

Every attempt, failed or not, is recorded as an accounting `UpstreamCall` in
`ctx.calls` in attempt order (hop = primary / retry / fallback).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import aclosing
from typing import Any, AsyncIterator

from accounting import UpstreamCall
from accounting.models import Usage
from accounting.tokens import count_text_tokens, estimate_prompt_tokens
from router.http.errors import budget_exceeded
from router.tiers.base import THINK_PROMPT_TOKENS, ExecContext
from router.upstream.deployment import Deployment
from router.upstream.errors import UpstreamError

log = logging.getLogger("triage.fallback")

MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0          # a retry-after longer than this moves on rather than waits
COOLDOWN_BASE_S = 5.0
COOLDOWN_MAX_S = 60.0
MIN_CALL_TOKENS = 16         # an attempt the budget squeezes below this is skipped, not sent

THINK_PROMPT = (
    "Think through the problem step by step in at most {steps} short numbered steps. Then write a line "
    "starting with 'FINAL ANSWER:' followed by only the answer the user should see."
)
ANSWER_MARKER = "FINAL ANSWER:"
_now = time.monotonic
_perf = time.perf_counter


class Cooldowns:
    """Process-wide: deployment -> when it may be tried first again."""

    __slots__ = ("_until", "_fails")

    def __init__(self) -> None:
        self._until: dict[tuple[str, str, str], float] = {}
        self._fails: dict[tuple[str, str, str], int] = {}

    @staticmethod
    def key(dep: Deployment) -> tuple[str, str, str]:
        return (dep.name, dep.api_base or "", dep.model)

    def cooling(self, dep: Deployment) -> bool:
        until = self._until.get(self.key(dep))
        return until is not None and until > _now()

    def failed(self, dep: Deployment, retry_after: float | None) -> None:
        k = self.key(dep)
        n = self._fails.get(k, 0) + 1
        self._fails[k] = n
        span = min(max(retry_after or 0.0, COOLDOWN_BASE_S * 2 ** (n - 1)), COOLDOWN_MAX_S)
        self._until[k] = _now() + span

    def succeeded(self, dep: Deployment) -> None:
        k = self.key(dep)
        if k in self._fails:
            del self._fails[k]
            self._until.pop(k, None)

    def reset(self) -> None:
        self._until.clear()
        self._fails.clear()


COOLDOWNS = Cooldowns()


def attempts(ctx: ExecContext, chain: list[str]) -> list[tuple[str, Deployment]]:
    """Attempt order: the chain's warm deployments in order, cooling ones last, then retries of the same."""
    warm: list[tuple[str, Deployment]] = []
    cold: list[tuple[str, Deployment]] = []
    for name in chain:
        for dep in ctx.deployments.get(name, ()):
            (cold if COOLDOWNS.cooling(dep) else warm).append((name, dep))
    order = warm + cold
    if not order:
        return []
    out = list(order)
    while len(out) < MAX_ATTEMPTS:
        out.extend(order)
    return out[:MAX_ATTEMPTS]


def worst_rates(ctx: ExecContext, model: str) -> tuple[float, float]:
    p = ctx.prices.price(model)
    return max(p.input, p.cache_write), max(p.output, p.reasoning)


def prompt_bound(ctx: ExecContext, messages: list[dict[str, Any]], known: int = 0) -> int:
    """Prompt-token upper bound: the policy's (which saw the messages) plus tools, which it did not."""
    n = known or estimate_prompt_tokens(messages)
    tools = ctx.body.get("tools")
    if tools:
        n += estimate_prompt_tokens([], tools)
    return n


def prepare(body: dict[str, Any], dep: Deployment, max_tokens: int, effort: str | None,
            think_steps: int | None) -> dict[str, Any]:
    b = dict(body)
    b.pop("max_tokens", None)
    b.pop("max_completion_tokens", None)
    if dep.supports_reasoning:
        # Reasoning models count thinking in max_completion_tokens and reject max_tokens.
        b["max_completion_tokens"] = max_tokens
        if effort:
            b["reasoning_effort"] = effort
    else:
        b["max_tokens"] = max_tokens
        b.pop("reasoning_effort", None)
        if think_steps:
            b["messages"] = [{"role": "system", "content": THINK_PROMPT.format(steps=think_steps)}, *b["messages"]]
    b.pop("n", None)
    return b


def extract_answer(text: str) -> str:
    i = text.rfind(ANSWER_MARKER)
    return text[i + len(ANSWER_MARKER):].strip() if i >= 0 else text


def _hop(i: int, model: str, prev: str | None) -> str:
    if i == 0:
        return "primary"
    return "retry" if model == prev else "fallback"


def _record(ctx: ExecContext, model: str, usage: dict[str, Any] | None, t0: float, status: str, hop: str,
            est_prompt: int = 0, est_text: str = "") -> UpstreamCall:
    if usage:
        u = Usage.from_openai(usage)
        estimated = False
    else:
        u = Usage(prompt_tokens=est_prompt, completion_tokens=count_text_tokens(est_text)) if (est_prompt or est_text) else Usage()
        estimated = bool(est_prompt or est_text)
    call = UpstreamCall(
        model=model, prompt_tokens=u.prompt_tokens, cached_tokens=u.cached_tokens,
        completion_tokens=u.completion_tokens, reasoning_tokens=u.reasoning_tokens,
        cache_write_tokens=u.cache_write_tokens, cost_usd=ctx.prices.cost(model, u) if (usage or estimated) else 0.0,
        latency_ms=(_perf() - t0) * 1000, status=status, hop=hop, estimated=estimated,
    )
    ctx.calls.append(call)
    return call


def _err_status(e: UpstreamError) -> str:
    return f"{e.upstream_status or e.status} {e.kind}"


class Step:
    """Outcome of one chain call; for streams it fills in while chunks flow."""

    __slots__ = ("model", "dep", "spent", "call")

    def __init__(self) -> None:
        self.model: str | None = None
        self.dep: Deployment | None = None
        self.spent = 0.0
        self.call: UpstreamCall | None = None


async def _pace(i: int, dep: Deployment, tried: dict[int, float | None]) -> bool:
    """Sleep before re-trying a deployment; False when its retry-after is too long to wait for."""
    if id(dep) not in tried:
        return True
    ra = tried[id(dep)]
    if ra is not None and ra > BACKOFF_MAX_S:
        return False
    delay = random.uniform(0.5, 1.0) * min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** i)
    if ra:
        delay = max(delay, ra)
    await asyncio.sleep(delay)
    return True


def _size(ctx: ExecContext, model: str, prompt: int, max_tokens: int, room: float) -> int:
    i, o = worst_rates(ctx, model)
    if o <= 0:
        return max_tokens
    return min(max_tokens, int((room - prompt * i) / o))


async def _sized_attempts(ctx: ExecContext, chain: list[str], prompt: int, max_tokens: int, allowance: float,
                          think_steps: int | None, step: "Step", tried: dict[int, float | None]
                          ) -> AsyncIterator[tuple[str, Deployment, int | None, int, int, str]]:
    """Attempts that the remaining allowance can pay for, paced by backoff:
    (model, dep, think steps, prompt tokens, max tokens, hop)."""
    prev: str | None = None
    n = 0
    for model, dep in attempts(ctx, chain):
        think = think_steps if not dep.supports_reasoning else None
        p = prompt + (THINK_PROMPT_TOKENS if think else 0)
        mt = _size(ctx, model, p, max_tokens, allowance - step.spent)
        if mt < min(MIN_CALL_TOKENS, max_tokens) or not await _pace(n, dep, tried):
            continue
        hop = _hop(n, model, prev)
        n += 1
        prev = model
        yield model, dep, think, p, mt, hop


def _failed(ctx: ExecContext, model: str, dep: Deployment, e: UpstreamError, t0: float, hop: str,
            tried: dict[int, float | None]) -> None:
    """Record a failed attempt; re-raise what no retry can fix, else cool the deployment down."""
    _record(ctx, model, None, t0, _err_status(e), hop)
    if not e.retryable:
        raise e
    COOLDOWNS.failed(dep, e.retry_after)
    tried[id(dep)] = e.retry_after


async def complete_chain(ctx: ExecContext, chain: list[str], body: dict[str, Any], *, max_tokens: int,
                         prompt: int, allowance: float, effort: str | None = None,
                         think_steps: int | None = None, step: Step | None = None) -> dict[str, Any]:
    """One non-stream answer over the chain; returns the upstream chat.completion."""
    step = step or Step()
    last: UpstreamError | None = None
    tried: dict[int, float | None] = {}
    async for model, dep, think, p, mt, hop in _sized_attempts(ctx, chain, prompt, max_tokens, allowance,
                                                                 think_steps, step, tried):
        t0 = _perf()
        try:
            resp = await ctx.upstream.complete(dep, prepare(body, dep, mt, effort, think))
        except UpstreamError as e:
            last = e
            _failed(ctx, model, dep, e, t0, hop, tried)
            continue
        except asyncio.CancelledError:
            # The provider has the prompt and may be generating: bill at least the prompt.
            _record(ctx, model, None, t0, "cancelled", hop, est_prompt=p)
            raise
        COOLDOWNS.succeeded(dep)
        usage = resp.get("usage")
        text = ""
        if not usage:
            msg = (resp.get("choices") or [{}])[0].get("message") or {}
            text = msg.get("content") or ""
        call = _record(ctx, model, usage, t0, "ok", hop, est_prompt=p, est_text=text)
        step.spent += call.cost_usd
        step.model, step.dep, step.call = model, dep, call
        if think:
            for ch in resp.get("choices") or ():
                m = ch.get("message") or {}
                if isinstance(m.get("content"), str):
                    m["content"] = extract_answer(m["content"])
        return resp
    if last is not None:
        raise last
    raise budget_exceeded("The remaining per-query budget cannot pay for another upstream call.")


async def stream_chain(ctx: ExecContext, chain: list[str], body: dict[str, Any], *, max_tokens: int,
                       prompt: int, allowance: float, effort: str | None = None,
                       think_steps: int | None = None, step: Step | None = None) -> AsyncIterator[dict[str, Any]]:
    """Chunks of one streamed answer. Falls back only before the first chunk was forwarded.

    Usage-only chunks are consumed (the executor emits one summed usage chunk at the end).
    """
    step = step or Step()
    last: UpstreamError | None = None
    tried: dict[int, float | None] = {}
    async for model, dep, think, p, mt, hop in _sized_attempts(ctx, chain, prompt, max_tokens, allowance,
                                                                 think_steps, step, tried):
        t0 = _perf()
        agen = ctx.upstream.stream(dep, prepare(body, dep, mt, effort, think))
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            first = None
        except UpstreamError as e:
            await agen.aclose()
            last = e
            _failed(ctx, model, dep, e, t0, hop, tried)
            continue
        except (asyncio.CancelledError, GeneratorExit):
            await agen.aclose()
            _record(ctx, model, None, t0, "cancelled", hop, est_prompt=p)
            raise
        COOLDOWNS.succeeded(dep)
        step.model, step.dep = model, dep
        async with aclosing(_relay(ctx, agen, first, model, t0, hop, p, step, think)) as relay:
            async for c in relay:
                yield c
        return
    if last is not None:
        raise last
    raise budget_exceeded("The remaining per-query budget cannot pay for another upstream call.")


async def _relay(ctx: ExecContext, agen: Any, first: dict[str, Any] | None, model: str, t0: float, hop: str,
                 p: int, step: Step, think: int | None) -> AsyncIterator[dict[str, Any]]:
    usage: dict[str, Any] | None = None
    text: list[str] = []
    status = "ok"
    gate = _AnswerGate() if think else None
    try:
        chunk = first
        while chunk is not None:
            u = chunk.get("usage")
            if u:
                usage = u
            choices = chunk.get("choices")
            if choices:
                if u is not None:
                    chunk = {k: v for k, v in chunk.items() if k != "usage"}
                delta = choices[0].get("delta") or {}
                c = delta.get("content")
                if c:
                    text.append(c)
                if gate is None:
                    yield chunk
                else:
                    for out in gate.feed(chunk):
                        yield out
            try:
                chunk = await agen.__anext__()
            except StopAsyncIteration:
                chunk = None
        if gate is not None:
            for out in gate.flush():
                yield out
    except UpstreamError as e:
        status = _err_status(e)
        if step.dep is not None:
            COOLDOWNS.failed(step.dep, e.retry_after)  # a provider dropping streams is failing too
        raise
    except (asyncio.CancelledError, GeneratorExit):
        status = "cancelled"
        raise
    finally:
        await agen.aclose()
        call = _record(ctx, model, usage, t0, status, hop, est_prompt=p, est_text="".join(text))
        step.spent += call.cost_usd
        step.call = call


class _AnswerGate:
    """Think-then-answer over a stream: hold text until the answer marker, then forward the rest."""

    __slots__ = ("buf", "open", "template")

    def __init__(self) -> None:
        self.buf = ""
        self.open = False
        self.template: dict[str, Any] | None = None

    def _chunk(self, text: str | None, finish: str | None = None) -> dict[str, Any]:
        t = self.template or {}
        delta: dict[str, Any] = {"content": text} if text is not None else {}
        return {**{k: v for k, v in t.items() if k != "choices"},
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self.template is None:
            self.template = chunk
        ch = chunk["choices"][0]
        delta = ch.get("delta") or {}
        c = delta.get("content")
        finish = ch.get("finish_reason")
        if self.open:
            return [chunk]
        out: list[dict[str, Any]] = []
        if delta.get("role") and not c:
            out.append(chunk)
        if c:
            self.buf += c
            i = self.buf.find(ANSWER_MARKER)
            if i >= 0:
                self.open = True
                rest = self.buf[i + len(ANSWER_MARKER):].lstrip()
                self.buf = ""
                if rest:
                    out.append(self._chunk(rest))
        if finish:
            out.extend(self.flush(finish))
        return out

    def flush(self, finish: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.open and self.buf:
            # No marker: the model ignored the format; the whole text is the best answer we have.
            out.append(self._chunk(self.buf))
            self.buf = ""
            self.open = True
        if finish:
            out.append(self._chunk(None, finish))
        return out
