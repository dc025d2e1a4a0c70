"""cascade: the fast model answers, a check scores the answer, doubt escalates.

The check is `classifier.answer_check.check` (pure) fed with what the upstream returned,
cheapest signals first:
  1. the cheap answer's token logprobs (requested with `logprobs: true`; free),
  2. agreement with `samples` more cheap answers (own seed and temperature each, sent in
     parallel with the first, so they add cost but no latency),
  3. structural checks (JSON / `response_format` schema, tool-call arguments, code that parses),
  4. a verifier call (`verifier: MODEL`, optional): only when 1-3 did not already escalate,
     the verifier is asked whether the cheap answer is correct and complete; "NO" escalates.
When the score reaches `threshold`, or the verifier says no, the request is answered by the
`escalate_to` tier (default: the next configured tier above cascade) and the client gets that
answer. Otherwise the client gets the cheap answer.

Money: admission holds the worst case of everything (cheap answer + samples + verifier + the
escalation tier's whole plan, via router/tiers/cost.py); each cheap call is capped at its own
worst case, and the escalation runs with what is left, which is at least its plan. The ledger
gets every call (they all go through the chain) and `decision.outcome`: escalated or not, why,
the score, the answer kind and the signals.

Streaming: the cheap answer is buffered until it is checked, then sent at once, or the
escalation tier streams instead. Time to first token is therefore the cheap model's whole
answer time plus the check (see docs/cascade.md for measured numbers); keep-alives go out
meanwhile.

`triage/auto` chooses cascade like any tier: when its quality (default 0.84, set it to the
escalation tier's to let it stand in for that tier) meets the target and its *expected* cost
(cheap part + `expected_escalation` x the escalation plan) is the lowest. Admission still holds
the worst case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, AsyncGenerator, ClassVar

from pydantic import Field

from classifier.answer_check import answer_text, check, reasons
from router.http.errors import ProxyError
from router.tiers import cost
from router.tiers.base import ExecContext, Plan, TierConfig
from router.tiers.fast import base_body, chunk_base, remaining, usage_chunk, usage_totals
from router.tiers.table import MIN_ANSWER_TOKENS, RateInfo, TierTable
from router.tiers.votes import agent_variation
from router.upstream.chain import Step, complete_chain, prompt_bound, worst_case
from router.upstream.errors import UpstreamError

KEEPALIVE_S = 5.0
VERIFY_PREFIX = "Proposed answer:"
VERIFY_PROMPT = (VERIFY_PREFIX + " {answer}\n\nIs this proposed answer to the question above correct and complete? "
                 "Reply with only YES or NO.")
VERIFY_FRAME_TOKENS = 48     # the verifier instruction around the quoted answer
VERIFY_MAX_TOKENS = 8        # "YES" / "NO"


class CascadeConfig(TierConfig):
    """models: the cheap chain that answers first."""

    escalate_to: str | None = None          # a configured tier; default: the next one above cascade
    samples: int = Field(default=1, ge=0, le=8)    # extra cheap answers compared with the first
    logprobs: bool = True                   # ask the cheap model for token logprobs
    verifier: str | None = None             # a model_name asked "is this answer correct?"
    threshold: float = Field(default=0.5, gt=0, lt=1)   # escalate when the check's score reaches this
    expected_escalation: float = Field(default=0.4, ge=0, le=1)   # for choosing the tier, not for holds

    def referenced_models(self) -> dict[str, str]:
        refs = super().referenced_models()
        if self.verifier:
            refs["verifier"] = self.verifier
        return refs

    def check_tiers(self, tiers: dict[str, TierConfig]) -> str | None:
        if self.escalate_to is not None and (self.escalate_to == "cascade" or self.escalate_to not in tiers):
            return f"escalate_to: '{self.escalate_to}' is not another configured tier"
        if self.escalate_to is None and not any(t in tiers for t in _ABOVE):
            return "escalate_to: no tier above cascade is configured to escalate to"
        return None


_ABOVE = ("reasoning", "deliberate")


class CascadeTable(TierTable):
    def __init__(self, tier: CascadeTier, spec: CascadeConfig, rate: dict[str, RateInfo]):
        super().__init__(tier, spec, rate)
        self.spec = spec
        self.verifier_rates: list[cost.Rate] = [(rate[spec.verifier][0], rate[spec.verifier][1])] if spec.verifier else []
        self.esc: TierTable | None = None

    def link(self, tables: dict[str, TierTable]) -> None:
        target = self.spec.escalate_to or next(t for t in _ABOVE if t in tables)
        self.esc = tables[target]

    def cheap_cost(self, p: int, answer: int, samples: int, verify: bool) -> float:
        c = (1 + samples) * cost.chain_cost(self.rates, p, answer)
        if verify:
            c += cost.chain_cost(self.verifier_rates, p + answer + VERIFY_FRAME_TOKENS, VERIFY_MAX_TOKENS)
        return c

    def rungs(self, answer: int, client_effort: str | None) -> list[tuple[int, bool, Any, str]]:
        """(samples, verifier?, escalation knobs, note): full checks first, then cheaper checks,
        then the escalation tier's own reduced rungs."""
        assert self.esc is not None
        k, v = self.spec.samples, bool(self.spec.verifier)
        esc = self.esc.ladder(answer, client_effort)
        out = [(k, v, esc[0], "")]
        if v:
            out.append((k, False, esc[0], "no verifier"))
        if k:
            out.append((0, False, esc[0], f"samples {k}->0" + (", no verifier" if v else "")))
        base = out[-1][3]
        out += [(0, False, ek, (base + "; " if base else "") + f"escalation {ek.note}") for ek in esc[1:]]
        return out

    def _plan(self, p: int, answer: int, samples: int, verify: bool, ek: Any, note: str) -> Plan:
        assert self.esc is not None
        esc_est, esc_max = self.esc.estimate(p, ek)
        esc_plan = self.esc.plan(esc_est, esc_max, ek, p)
        est = self.cheap_cost(p, answer, samples, verify) + esc_est
        s = self.spec
        return Plan(tier=self.name, models=self.chain, max_tokens=answer, estimate_usd=est, note=note,
                    prompt_tokens=p, answer_tokens=answer, stages=[esc_plan],
                    options={"samples": samples, "verifier": s.verifier if verify else None,
                             "threshold": s.threshold, "logprobs": s.logprobs, "escalate_to": self.esc.name})

    def plans(self, p: int, answer: int, client_effort: str | None, cap: float | None,
              rejected: list[dict[str, Any]]) -> list[Plan]:
        out: list[Plan] = []
        for samples, verify, ek, note in self.rungs(answer, client_effort):
            plan = self._plan(p, answer, samples, verify, ek, note)
            if cap is not None and plan.estimate_usd > cap:
                if len(rejected) < 24:
                    rejected.append({"tier": self.name, "estimate_usd": plan.estimate_usd,
                                     "why": f"over cap ${cap:.6f}" + (f" ({note})" if note else "")})
                continue
            out.append(plan)
        return out

    def first_estimate(self, p: int, answer: int, client_effort: str | None) -> float:
        samples, verify, ek, note = self.rungs(answer, client_effort)[0]
        return self._plan(p, answer, samples, verify, ek, note).estimate_usd

    def choice_estimate(self, p: int, answer: int, client_effort: str | None) -> float:
        assert self.esc is not None
        samples, verify, ek, _ = self.rungs(answer, client_effort)[0]
        esc_est = self.esc.estimate(p, ek)[0]
        return self.cheap_cost(p, answer, samples, verify) + self.spec.expected_escalation * esc_est

    def min_plan(self, p: int, answer: int, client_effort: str | None) -> tuple[float, str]:
        assert self.esc is not None
        esc_min, _ = self.esc.min_plan(p, answer, client_effort)
        return self.cheap_cost(p, min(MIN_ANSWER_TOKENS, answer), 0, False) + esc_min, self.primary_model()


class _Checked:
    """The cheap phase's result: the answer the client may get, and the verdict."""

    __slots__ = ("resp", "escalate", "outcome")

    def __init__(self, resp: dict[str, Any], escalate: bool, outcome: dict[str, Any]):
        self.resp = resp
        self.escalate = escalate
        self.outcome = outcome


async def _cheap_phase(plan: Plan, ctx: ExecContext) -> _Checked:
    opts = plan.options
    body = base_body(ctx)
    msgs = body["messages"]
    p = prompt_bound(ctx, msgs, plan.prompt_tokens)
    native = any(d.supports_reasoning for m in plan.models for d in ctx.deployments.get(m, ()))
    worst = worst_case(ctx, plan.models, p, plan.max_tokens)
    want_lp = bool(opts.get("logprobs"))
    n = 1 + int(opts.get("samples") or 0)
    room = remaining(ctx)
    if worst > 0 and room < n * worst:      # handed less than the plan (partial fail-open): fewer samples
        n = max(1, int(room // worst))
    allowance = min(worst, room / n)        # each call within its own share of what is left

    async def one(i: int) -> dict[str, Any]:
        params = agent_variation(i, body, native)[0]      # sample i: own seed/temperature, same prompt
        b = {**body, **params}
        if want_lp and not body.get("logprobs"):
            try:
                return await complete_chain(ctx, plan.models, {**b, "logprobs": True}, max_tokens=plan.max_tokens,
                                            prompt=p, allowance=allowance, step=Step())
            except UpstreamError as e:
                if e.retryable or e.status not in (400, 422):
                    raise
                # A provider that refuses `logprobs`: answer without them (the other checks remain).
        return await complete_chain(ctx, plan.models, b, max_tokens=plan.max_tokens, prompt=p,
                                    allowance=allowance, step=Step())

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    first = results[0]
    if isinstance(first, BaseException):
        raise first                      # no cheap answer at all: the request fails like a fast one would
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, (UpstreamError, ProxyError)):
            raise r
    good = [r for r in results if isinstance(r, dict)]
    answers = [_message(r) for r in good]
    lps = [_logprobs(r) for r in good]
    res = check(msgs, answers, lps if any(lp is not None for lp in lps) else None,
                response_format=body.get("response_format"), tools=body.get("tools"))
    threshold = float(opts.get("threshold") or 0.5)
    escalate = res.escalate >= threshold or bool(res.signals.get("found") and not res.signals.get("valid"))
    why = reasons(res, threshold) if escalate else []
    checks = ["structure"] + (["logprobs"] if lps[0] is not None else []) + (["samples"] if len(answers) > 1 else [])
    verdict = None
    verifier = opts.get("verifier")
    if not escalate and verifier and answer_text(answers[0]).strip():
        checks.append("verifier")
        verdict = await _verify(ctx, body, p, plan, verifier, answer_text(answers[0]))
        if verdict == "NO":
            escalate, why = True, ["verifier_rejected"]
    outcome = {"escalated": bool(escalate), "why": why, "score": res.escalate, "threshold": threshold,
               "kind": res.kind, "checks": checks, "samples": len(answers) - 1,
               "agreement": res.signals.get("agreement"), "answer_logprob": res.signals.get("answer_logprob"),
               "mean_logprob": res.signals.get("mean_logprob")}
    if verdict is not None:
        outcome["verifier"] = verdict
    if escalate:
        outcome["escalate_to"] = opts.get("escalate_to")
    return _Checked(first, bool(escalate), outcome)


async def _verify(ctx: ExecContext, body: dict[str, Any], p: int, plan: Plan, verifier: str, answer: str) -> str | None:
    """'YES' / 'NO' from the verifier, or None when it failed (then the check stands as it is)."""
    vb = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "response_format", "logprobs",
                                                      "top_logprobs", "n", "seed", "temperature")}
    vb["messages"] = [*body["messages"], {"role": "user", "content": VERIFY_PROMPT.format(answer=answer)}]
    vp = p + plan.max_tokens + VERIFY_FRAME_TOKENS
    try:
        r = await complete_chain(ctx, [verifier], vb, max_tokens=VERIFY_MAX_TOKENS, prompt=vp,
                                 # a hair over the exact worst case: float rounding there sized the 8-token reply
                                 # at 7 and skipped the verifier; the hold's remainder still bounds it
                                 allowance=min(worst_case(ctx, [verifier], vp, VERIFY_MAX_TOKENS) * (1 + 1e-9),
                                               remaining(ctx)),
                                 step=Step())
    except (UpstreamError, ProxyError):
        return None
    text = answer_text(_message(r)).strip().upper()
    if text.startswith("NO"):
        return "NO"
    return "YES" if text.startswith("YES") else None


def _message(resp: dict[str, Any]) -> dict[str, Any]:
    return dict(((resp.get("choices") or [{}])[0]).get("message") or {})


def _logprobs(resp: dict[str, Any]) -> list[Any] | None:
    lp = ((resp.get("choices") or [{}])[0]).get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    return content if isinstance(content, list) and content else None


class CascadeTier:
    name: ClassVar[str] = "cascade"
    tier = "cascade"
    level: ClassVar[int | None] = None      # chosen by quality and expected cost, not by the classifier's verdict
    default_quality: ClassVar[float] = 0.84
    config_model: ClassVar[type[TierConfig]] = CascadeConfig
    keepalive: ClassVar[bool] = True        # the cheap answer is buffered while it is checked

    def __init__(self) -> None:
        self._executors: Mapping[str, Any] = {}

    def bind(self, executors: Mapping[str, Any]) -> None:
        """The registry hands over every tier's executor (it imports this module, so not the reverse)."""
        self._executors = executors

    def _escalation(self, plan: Plan) -> tuple[Plan, Any]:
        esc = plan.stages[0]
        return esc, self._executors[esc.tier]

    def table(self, spec: TierConfig, rate: dict[str, RateInfo]) -> CascadeTable:
        assert isinstance(spec, CascadeConfig)
        return CascadeTable(self, spec, rate)

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]:
        checked = await _cheap_phase(plan, ctx)
        ctx.outcome.update(checked.outcome)
        if checked.escalate and remaining(ctx) > 0:
            esc, ex = self._escalation(plan)
            return await ex.complete(esc, ctx)
        return self._cheap_response(checked.resp, ctx)

    def _cheap_response(self, resp: dict[str, Any], ctx: ExecContext) -> dict[str, Any]:
        for ch in resp.get("choices") or ():
            if not ctx.body.get("logprobs"):
                ch["logprobs"] = None     # asked for the check, not by the client
        resp["model"] = next((c.model for c in reversed(ctx.calls) if c.status == "ok"), resp.get("model"))
        resp["usage"] = usage_totals(ctx)
        return resp

    async def stream(self, plan: Plan, ctx: ExecContext) -> AsyncGenerator[dict[str, Any] | str, None]:
        task = asyncio.ensure_future(_cheap_phase(plan, ctx))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_S)
                if done:
                    break
                yield "keep-alive"
            checked = task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        ctx.outcome.update(checked.outcome)
        if checked.escalate and remaining(ctx) > 0:
            esc, ex = self._escalation(plan)
            async for item in ex.stream(esc, ctx):
                yield item
            return
        resp = self._cheap_response(checked.resp, ctx)
        ch = (resp.get("choices") or [{}])[0]
        msg = ch.get("message") or {}
        base = chunk_base(ctx, None, resp.get("model"))
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        delta: dict[str, Any] = {}
        if msg.get("content"):
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(msg["tool_calls"])]
        if delta:
            c: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": None}
            if ch.get("logprobs"):
                c["logprobs"] = ch["logprobs"]
            yield {**base, "choices": [c]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": ch.get("finish_reason") or "stop"}]}
        yield usage_chunk(ctx, None, resp.get("model"))
