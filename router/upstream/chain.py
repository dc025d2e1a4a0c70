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
import re
import time
import zlib
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, AsyncGenerator, Iterable, Iterator, Literal, Protocol

from accounting import UpstreamCall
from accounting.models import Usage
from accounting.tokens import count_prompt_tokens, count_text_tokens, estimate_prompt_tokens
from router.http.errors import budget_exceeded
from router.tiers import cost
from router.upstream.cooldowns import COOLDOWNS, Cooldowns
from router.upstream.deployment import Deployment
from router.upstream.errors import UpstreamError

if TYPE_CHECKING:
    from router.tiers.base import ExecContext

__all__ = ["COOLDOWNS", "Cooldowns", "MAX_ATTEMPTS", "Step", "Thinking", "StreamGate", "attempts", "complete_chain",
           "prepare", "prompt_bound", "stream_chain", "worst_rates"]

log = logging.getLogger("triage.fallback")

MAX_ATTEMPTS = 4
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0          # a retry-after longer than this moves on rather than waits
MIN_CALL_TOKENS = 16         # an attempt the budget squeezes below this is skipped, not sent

_perf = time.perf_counter


class StreamGate(Protocol):
    """Filters a streamed answer's chunks (think-then-answer hides the scratch work)."""

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]: ...

    def flush(self, finish: str | None = None) -> list[dict[str, Any]]: ...


class Thinking(Protocol):
    """How a tier makes a model without native reasoning think first (router/tiers/reasoning.py).

    Applied per attempt, because whether it is needed depends on the deployment that serves it.
    """

    prompt_tokens: int  # what the instruction adds to the prompt bound

    def applies(self, dep: Deployment) -> bool: ...

    def instruct(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def extract(self, text: str) -> str: ...

    def gate(self) -> StreamGate: ...


def attempts(ctx: ExecContext, chain: list[str]) -> list[tuple[str, Deployment]]:
    """Attempt order: the chain's warm deployments in order, cooling ones last, then retries of the same."""
    warm: list[tuple[str, Deployment]] = []
    cold: list[tuple[str, Deployment]] = []
    spread = ctx.affinity or ctx.request_id
    for name in chain:
        deps = ctx.deployments.get(name, ())
        if len(deps) > 1:  # several deployments of one model: start at the one this key hashes to
            k = zlib.crc32(f"{spread}\x00{name}".encode()) % len(deps)
            deps = [*deps[k:], *deps[:k]]
        for dep in deps:
            (cold if COOLDOWNS.cooling(dep) else warm).append((name, dep))
    order = warm + cold
    if not order:
        return []
    # LiteLLM's num_retries: every deployment once, then that many more attempts; default MAX_ATTEMPTS in all.
    total = MAX_ATTEMPTS if ctx.num_retries is None else len(order) + ctx.num_retries
    out = list(order)
    while len(out) < total:
        out.extend(order)
    return out[:total]


def worst_rates(ctx: ExecContext, model: str, prompt: int = 0) -> cost.Rate:
    return cost.rate(ctx.prices, model, prompt, cost.service_tier(ctx.body))


def worst_case(ctx: ExecContext, chain: Iterable[str], prompt: int, max_tokens: int) -> float:
    """What one call over `chain` can cost at most: the allowance a deliberation agent gets."""
    return cost.chain_cost(cost.rates(ctx.prices, chain, prompt, cost.service_tier(ctx.body)), prompt, max_tokens)


def prompt_bound(ctx: ExecContext, messages: list[dict[str, Any]], known: int = 0) -> int:
    """Prompt-token upper bound: the policy's (which saw the messages) plus tools, which it did not."""
    n = known or estimate_prompt_tokens(messages)
    tools = ctx.body.get("tools")
    if tools:
        n += estimate_prompt_tokens([], tools)
    return n


def prepare(body: dict[str, Any], dep: Deployment, max_tokens: int, effort: str | None,
            think: Thinking | None) -> dict[str, Any]:
    b = dict(body)
    b["model"] = dep.model  # the provider's id: the upstream client then sends this dict as it is
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
        if think is not None:
            b["messages"] = think.instruct(b["messages"])
    return b


# Request fields whose meaning the think-then-answer instruction would break: a tool call or a JSON
# document must be the whole reply, and logprobs must describe the tokens the client receives.
VERBATIM_FIELDS = ("tools", "functions", "response_format", "logprobs", "top_logprobs")


def needs_verbatim(body: dict[str, Any]) -> bool:
    return any(body.get(k) for k in VERBATIM_FIELDS)


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 1 else 1


Hop = Literal["primary", "retry", "fallback"]


def _hop(i: int, model: str, prev: str | None) -> Hop:
    if i == 0:
        return "primary"
    return "retry" if model == prev else "fallback"


_NO_USAGE = Usage()
_USAGE_RE = re.compile(r'"(prompt_tokens|completion_tokens)"\s*:\s*(\d+)')


def _record(ctx: ExecContext, model: str, usage: dict[str, Any] | None, t0: float, status: str, hop: Hop,
            est_prompt: int = 0, est_text: str = "", sent: dict[str, Any] | None = None,
            est_completion: int = 0, billed: bool = False) -> UpstreamCall:
    """Record one attempt. Without usage from the provider, an attempt that reached it is billed at a best
    estimate: the prompt actually sent (counted, not the admission bound) plus what it generated."""
    if usage:
        u = Usage.from_openai(usage)
        estimated = False
    elif est_prompt or est_text or est_completion:
        prompt = count_prompt_tokens(sent["messages"], sent.get("tools")) if sent else est_prompt
        u = Usage(prompt_tokens=prompt, completion_tokens=max(count_text_tokens(est_text), est_completion))
        estimated = True
    else:
        u = _NO_USAGE
        estimated = False
    st = cost.service_tier(ctx.body)
    call = UpstreamCall(
        model=model, prompt_tokens=u.prompt_tokens, cached_tokens=u.cached_tokens,
        completion_tokens=u.completion_tokens, reasoning_tokens=u.reasoning_tokens,
        cache_write_tokens=u.cache_write_tokens, cache_write_1h_tokens=u.cache_write_1h_tokens, service_tier=st,
        cost_usd=ctx.prices.cost(model, u, st) if (usage or estimated) else 0.0,
        latency_ms=(_perf() - t0) * 1000, status=status, hop=hop, estimated=estimated,
        billed_failure=billed or (status not in ("ok", "cancelled") and estimated and u.completion_tokens > 0),
    )
    ctx.calls.append(call)
    return call


def _consumed_estimate(e: UpstreamError, max_tokens: int) -> tuple[str, int]:
    """(text to count, completion tokens) for an attempt the provider billed without a usable answer: the
    usage a malformed body still spells out, else its text, else (a timeout, a cut body) the attempt's
    max_tokens - the provider generated up to that and we cannot see how much."""
    raw = (e.consumed or {}).get("raw") or ""
    found = dict(_USAGE_RE.findall(raw))
    if "completion_tokens" in found:
        return "", min(int(found["completion_tokens"]), max_tokens)
    if raw:
        return "", min(count_text_tokens(raw), max_tokens)
    return "", max_tokens


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


def _backoff(i: int, dep: Deployment, tried: dict[int, float | None]) -> float | None:
    """Seconds to wait before re-trying a deployment (0: a first try); None when its retry-after is too long
    to wait for."""
    if id(dep) not in tried:
        return 0.0
    ra = tried[id(dep)]
    if ra is not None and ra > BACKOFF_MAX_S:
        return None
    delay = random.uniform(0.5, 1.0) * min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** i)
    if ra:
        delay = max(delay, ra)
    return delay


def _size(ctx: ExecContext, model: str, prompt: int, max_tokens: int, room: float, choices: int = 1) -> int:
    i, o = worst_rates(ctx, model, prompt)
    return cost.tokens_within((i, o * choices), prompt, room, max_tokens)  # n choices: n answers to pay for


def _sized_attempts(ctx: ExecContext, chain: list[str], prompt: int, max_tokens: int, allowance: float,
                    think: Thinking | None, step: "Step", tried: dict[int, float | None], choices: int = 1
                    ) -> Iterator[tuple[str, Deployment, Thinking | None, int, int, Hop, float]]:
    """Attempts that the remaining allowance can pay for, each sized when the previous one is over:
    (model, dep, thinking applied, prompt tokens, max tokens, hop, backoff seconds to wait first).

    A plain generator: an async one left suspended by the caller's return is closed by a task the event
    loop schedules from its finalizer hook, on every request."""
    prev: str | None = None
    n = 0
    floor = min(MIN_CALL_TOKENS, max_tokens)
    for model, dep in attempts(ctx, chain):
        th = think if (think is not None and think.applies(dep)) else None
        p = prompt + (th.prompt_tokens if th is not None else 0)
        mt = _size(ctx, model, p, max_tokens, allowance - step.spent, choices)
        if mt < floor:
            continue
        delay = _backoff(n, dep, tried)
        if delay is None:
            continue
        hop = _hop(n, model, prev)
        n += 1
        prev = model
        yield model, dep, th, p, mt, hop, delay


def _failed(ctx: ExecContext, model: str, dep: Deployment, e: UpstreamError, t0: float, hop: Hop,
            tried: dict[int, float | None], step: "Step", sent: dict[str, Any] | None = None,
            max_tokens: int = 0) -> None:
    """Record a failed attempt (at its best estimate when the provider billed it, flagged); re-raise what
    no retry can fix, else cool the deployment down."""
    if e.consumed is not None and sent is not None:
        # Billed by the provider, so it is on the bill and spent from this step's allowance: a retry only
        # gets what the hold has left, so a request never costs more than it was admitted with (when
        # nothing is left, the client gets the upstream error rather than an overspent budget).
        text, comp = _consumed_estimate(e, max_tokens)
        call = _record(ctx, model, None, t0, _err_status(e), hop, est_text=text, sent=sent,
                       est_completion=comp or 1, billed=True)
        step.spent += call.cost_usd
    else:
        _record(ctx, model, None, t0, _err_status(e), hop)
    if not e.retryable:
        raise e
    COOLDOWNS.failed(dep, e.retry_after)
    tried[id(dep)] = e.retry_after


async def complete_chain(ctx: ExecContext, chain: list[str], body: dict[str, Any], *, max_tokens: int,
                         prompt: int, allowance: float, effort: str | None = None,
                         think: Thinking | None = None, step: Step | None = None) -> dict[str, Any]:
    """One non-stream answer over the chain; returns the upstream chat.completion."""
    step = step or Step()
    last: UpstreamError | None = None
    tried: dict[int, float | None] = {}
    if think is not None and needs_verbatim(body):
        think = None  # a plain answer (native models still get their effort knob)
    for model, dep, th, p, mt, hop, delay in _sized_attempts(ctx, chain, prompt, max_tokens, allowance,
                                                             think, step, tried, _choices(body)):
        if delay:
            await asyncio.sleep(delay)
        t0 = _perf()
        sent = prepare(body, dep, mt, effort, th)
        try:
            resp = await ctx.upstream.complete(dep, sent)
        except UpstreamError as e:
            last = e
            _failed(ctx, model, dep, e, t0, hop, tried, step, sent, mt)
            continue
        except asyncio.CancelledError:
            # The provider has the prompt and may be generating: bill at least the prompt.
            _record(ctx, model, None, t0, "cancelled", hop, est_prompt=p, sent=sent)
            raise
        COOLDOWNS.succeeded(dep)
        usage = resp.get("usage")
        text = ""
        if not usage:
            msg = (resp.get("choices") or [{}])[0].get("message") or {}
            text = msg.get("content") or ""
        call = _record(ctx, model, usage, t0, "ok", hop, est_prompt=p, est_text=text, sent=sent)
        step.spent += call.cost_usd
        step.model, step.dep, step.call = model, dep, call
        if th is not None:
            for ch in resp.get("choices") or ():
                m = ch.get("message") or {}
                if isinstance(m.get("content"), str):
                    m["content"] = th.extract(m["content"])
        return resp
    if last is not None:
        raise last
    raise budget_exceeded("The remaining per-query budget cannot pay for another upstream call.")


async def stream_chain(ctx: ExecContext, chain: list[str], body: dict[str, Any], *, max_tokens: int,
                       prompt: int, allowance: float, effort: str | None = None,
                       think: Thinking | None = None, step: Step | None = None) -> AsyncGenerator[dict[str, Any], None]:
    """Chunks of one streamed answer. Falls back only before the first chunk was forwarded.

    Usage-only chunks are consumed (the executor emits one summed usage chunk at the end).
    """
    step = step or Step()
    last: UpstreamError | None = None
    tried: dict[int, float | None] = {}
    if think is not None and needs_verbatim(body):
        think = None  # a plain answer (native models still get their effort knob)
    for model, dep, th, p, mt, hop, delay in _sized_attempts(ctx, chain, prompt, max_tokens, allowance,
                                                             think, step, tried, _choices(body)):
        if delay:
            await asyncio.sleep(delay)
        t0 = _perf()
        sent = prepare(body, dep, mt, effort, th)
        agen = ctx.upstream.stream(dep, sent)
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            first = None
        except UpstreamError as e:
            await agen.aclose()
            last = e
            _failed(ctx, model, dep, e, t0, hop, tried, step)
            continue
        except (asyncio.CancelledError, GeneratorExit):
            await agen.aclose()
            _record(ctx, model, None, t0, "cancelled", hop, est_prompt=p, sent=sent)
            raise
        COOLDOWNS.succeeded(dep)
        step.model, step.dep = model, dep
        async with aclosing(_relay(ctx, agen, first, model, t0, hop, p, step, th, sent)) as relay:
            async for c in relay:
                yield c
        return
    if last is not None:
        raise last
    raise budget_exceeded("The remaining per-query budget cannot pay for another upstream call.")


async def _relay(ctx: ExecContext, agen: Any, first: dict[str, Any] | None, model: str, t0: float, hop: Hop,
                 p: int, step: Step, think: Thinking | None, sent: dict[str, Any] | None = None
                 ) -> AsyncGenerator[dict[str, Any], None]:
    usage: dict[str, Any] | None = None
    text: list[str] = []
    status = "ok"
    gate = think.gate() if think is not None else None
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
        # a cut stream: the prompt as sent plus what was generated, not the admission's prompt bound
        call = _record(ctx, model, usage, t0, status, hop, est_prompt=p, est_text="".join(text), sent=sent)
        step.spent += call.cost_usd
        step.call = call
