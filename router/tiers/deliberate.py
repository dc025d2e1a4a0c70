"""deliberate: N agents answer in parallel, then vote or debate.

vote   self-consistency: a strict majority of normalised final answers wins
       outright; otherwise the aggregator (if configured) picks a candidate by
       number, else the plurality (first agent on ties) wins. Picking costs a
       few output tokens where synthesising would cost a whole answer.
debate R rounds; from round 2 every agent sees every agent's previous answer,
       then the aggregator synthesises the final answer.

Prompt layout is cache-first: every agent of a round gets byte-identical
messages (the client's conversation, then one block with all answers in agent
order, then a fixed instruction), and the aggregator's prompt shares that
prefix, so providers' prompt caches hit; cached tokens are billed at the
cached rate through the ledger.

Budget: each agent call gets its own allowance (its worst case), the
aggregator's worst case is held back from the start, and a debate round only
starts when what is left can pay for all of it; otherwise deliberation stops
early and the aggregator works with the last complete round.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import aclosing
from typing import Any, AsyncIterator

from router.http.errors import ProxyError, budget_exceeded
from router.tiers.base import NATIVE_THINK, PICK_TOKENS, ExecContext, Plan, quoted_tokens
from accounting.tokens import estimate_prompt_tokens
from router.upstream.chain import Step, complete_chain, prompt_bound, stream_chain, worst_rates
from router.tiers.fast import base_body, chunk_base, remaining, usage_chunk, usage_totals
from router.upstream import UpstreamError

KEEPALIVE_S = 5.0

DEBATE_INSTRUCTION = (
    "Above are all agents' answers from the previous round, yours among them. Check them for errors, "
    "then give your own best answer. End with a line 'Answer: <final answer>'."
)
SYNTH_INSTRUCTION = (
    "Above are several agents' answers to the user's last message. Write the single best final answer "
    "for the user, correcting any errors. Reply with only that answer, addressed to the user."
)
PICK_INSTRUCTION = "Above are {n} candidate answers. Reply with only the number (1-{n}) of the best one."

_ANSWER_LINE = re.compile(r"(?im)^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$")
_WS = re.compile(r"\s+")
_INT = re.compile(r"\d+")


def answers_block(answers: list[str]) -> str:
    parts = [f"Answers from {len(answers)} independent agents:"]
    parts += [f"[Agent {i}]\n{a}" for i, a in enumerate(answers, 1)]
    return "\n\n".join(parts)


def answer_key(text: str) -> str:
    """What two answers must share to count as the same vote: the final answer line, normalised."""
    found = _ANSWER_LINE.findall(text or "")
    if found:
        k = found[-1]
    else:
        lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
        k = lines[-1] if lines else ""
    return _WS.sub(" ", k.strip().strip("*$`").rstrip(".!;,").lower())


def tally(answers: list[str]) -> tuple[int, int]:
    """(index of the plurality answer, its vote count); ties go to the earliest agent."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        k = answer_key(a)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, i)
    best = max(counts, key=lambda k: (counts[k], -first[k]))
    return first[best], counts[best]


class _Answer:
    __slots__ = ("agent", "model", "message", "finish")

    def __init__(self, agent: int, model: str, message: dict[str, Any], finish: str | None):
        self.agent = agent
        self.model = model
        self.message = message
        self.finish = finish

    @property
    def content(self) -> str:
        c = self.message.get("content")
        return c if isinstance(c, str) else ""


class _Run:
    """One deliberation: agents phase, then the final answer (vote or aggregator)."""

    def __init__(self, plan: Plan, ctx: ExecContext):
        self.plan = plan
        self.ctx = ctx
        self.body = base_body(ctx)
        self.messages: list[dict[str, Any]] = self.body["messages"]
        self.p0 = prompt_bound(ctx, self.messages, plan.prompt_tokens)
        pool = plan.fallbacks or list(dict.fromkeys(plan.models))
        self.chains = [[m, *[f for f in pool if f != m]] for m in plan.models]
        agg = plan.aggregator
        self.agg_chain = [agg, *[f for f in pool if f != agg]] if agg else []
        agg_native = bool(agg and any(d.supports_reasoning for d in ctx.deployments.get(agg, ())))
        out = plan.answer_tokens or plan.max_tokens
        self.agg_max = (out if plan.strategy == "debate" else PICK_TOKENS) + (NATIVE_THINK["low"] if agg_native else 0)
        self.answers: list[_Answer] = []
        self.rounds_run = 0
        self.stopped_early = False
        self.agg_failed = False  # a failed synthesis is not retried as a pick

    # -------------------------------------------------------------- budget

    def worst(self, chain: list[str], prompt: int, max_t: int) -> float:
        w = 0.0
        for m in chain:
            i, o = worst_rates(self.ctx, m)
            w = max(w, prompt * i + max_t * o)
        return w

    def agg_reserve(self) -> float:
        if not self.agg_chain:
            return 0.0
        prompt = self.p0 + quoted_tokens(len(self.plan.models), self.plan.max_tokens)
        return self.worst(self.agg_chain, prompt, self.agg_max)

    def note(self, **entry: Any) -> None:
        if self.ctx.want_transcript:
            self.ctx.transcript.append(entry)

    # -------------------------------------------------------------- agents

    async def _round(self, r: int, messages: list[dict[str, Any]], prompt: int, agents: list[int]) -> list[_Answer]:
        body = dict(self.body)
        body["messages"] = messages
        plan = self.plan

        async def one(i: int) -> _Answer:
            step = Step()
            chain = self.chains[i]
            resp = await complete_chain(self.ctx, chain, body, max_tokens=plan.max_tokens, prompt=prompt,
                                        allowance=self.worst(chain, prompt, plan.max_tokens),
                                        effort=plan.reasoning_effort, step=step)
            ch = (resp.get("choices") or [{}])[0]
            return _Answer(i, step.model or chain[0], dict(ch.get("message") or {}), ch.get("finish_reason"))

        results = await asyncio.gather(*(one(i) for i in agents), return_exceptions=True)
        good: list[_Answer] = []
        errors: list[BaseException] = []
        for i, res in zip(agents, results):
            if isinstance(res, BaseException):
                if not isinstance(res, (UpstreamError, ProxyError)):
                    raise res
                errors.append(res)
                self.note(round=r, agent=i + 1, error=str(res))
            else:
                good.append(res)
                self.note(round=r, agent=i + 1, model=res.model, content=res.content)
        if not good and errors:
            raise errors[0]
        return good

    async def agents_phase(self) -> None:
        plan, ctx = self.plan, self.ctx
        reserve = self.agg_reserve()
        # Round 1: as many agents as the reservation pays for (normally all; tools can shrink the room).
        agents: list[int] = []
        room = remaining(ctx) - reserve
        for i, chain in enumerate(self.chains):
            w = self.worst(chain, self.p0, plan.max_tokens)
            if w <= room + 1e-12:
                agents.append(i)
                room -= w
        if not agents:
            raise budget_exceeded("The reserved budget cannot pay for a single deliberation agent.")
        self.answers = await self._round(1, self.messages, self.p0, agents)
        self.rounds_run = 1
        for r in range(2, plan.rounds + 1):
            msgs = self.shared(self.answers, DEBATE_INSTRUCTION)
            prompt = self.bound(msgs)
            ids = [a.agent for a in self.answers]
            need = sum(self.worst(self.chains[i], prompt, plan.max_tokens) for i in ids)
            if remaining(ctx) - reserve < need:
                self.stopped_early = True
                self.note(event="stopped_early", round=r, reason="remaining budget cannot pay for another round")
                break
            try:
                new = await self._round(r, msgs, prompt, ids)
            except (UpstreamError, ProxyError):
                break  # keep the last complete round rather than lose the deliberation
            if new:
                self.answers = new
                self.rounds_run = r

    def shared(self, answers: list[_Answer], instruction: str) -> list[dict[str, Any]]:
        return [*self.messages, {"role": "user", "content": answers_block([a.content for a in answers])},
                {"role": "user", "content": instruction}]

    def bound(self, msgs: list[dict[str, Any]]) -> int:
        """Prompt bound of a shared-layout prompt: the client's part is already known, count only the tail."""
        return self.p0 + estimate_prompt_tokens(msgs[len(self.messages):])

    # -------------------------------------------------------------- final answer

    async def vote(self) -> _Answer:
        answers = self.answers
        idx, votes = tally([a.content for a in answers])
        how = "majority"
        if votes * 2 <= len(answers) and self.agg_chain and not self.agg_failed and len(answers) > 1:
            n = len(answers)
            msgs = self.shared(answers, PICK_INSTRUCTION.format(n=n))
            step = Step()
            try:
                resp = await complete_chain(self.ctx, self.agg_chain, self.body | {"messages": msgs},
                                            max_tokens=self.agg_max, prompt=self.bound(msgs),
                                            allowance=remaining(self.ctx), effort="low", step=step)
                text = ((resp.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                picks = [int(x) for x in _INT.findall(text) if 1 <= int(x) <= n]
                if picks:
                    idx, how = picks[0] - 1, "aggregator pick"
                self.note(role="aggregator", model=step.model, content=text)
            except (UpstreamError, ProxyError) as e:
                self.note(role="aggregator", error=str(e))
                how = "plurality (aggregator failed)"
        elif votes * 2 <= len(answers):
            how = "plurality"
        self.note(event="vote", winner=answers[idx].agent + 1, votes=votes, of=len(answers), how=how)
        return answers[idx]

    def synth_messages(self) -> list[dict[str, Any]]:
        return self.shared(self.answers, SYNTH_INSTRUCTION)

    def response(self, message: dict[str, Any], model: str, finish: str | None) -> dict[str, Any]:
        ctx = self.ctx
        msg = {"role": "assistant", **{k: v for k, v in message.items() if k != "role"}}
        resp: dict[str, Any] = {
            **chunk_base(ctx, None, model), "object": "chat.completion",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish or "stop"}],
            "usage": usage_totals(ctx),
        }
        if ctx.want_transcript:
            resp["triage_transcript"] = self.transcript()
        return resp

    def transcript(self) -> dict[str, Any]:
        p = self.plan
        return {"strategy": p.strategy, "agents": len(p.models), "rounds_planned": p.rounds,
                "rounds_run": self.rounds_run, "stopped_early": self.stopped_early, "entries": self.ctx.transcript}


class DeliberateExecutor:
    tier = "deliberate"

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]:
        run = _Run(plan, ctx)
        await run.agents_phase()
        if plan.strategy == "debate" and run.agg_chain:
            msgs = run.synth_messages()
            step = Step()
            try:
                resp = await complete_chain(ctx, run.agg_chain, run.body | {"messages": msgs},
                                            max_tokens=run.agg_max, prompt=run.bound(msgs),
                                            allowance=remaining(ctx), effort="low", step=step)
                ch = (resp.get("choices") or [{}])[0]
                message = dict(ch.get("message") or {})
                run.note(role="aggregator", model=step.model, content=message.get("content"))
                return run.response(message, step.model or run.agg_chain[0], ch.get("finish_reason"))
            except (UpstreamError, ProxyError) as e:
                run.note(role="aggregator", error=str(e))
                run.agg_failed = True
        win = await run.vote()
        return run.response(win.message, win.model, win.finish)

    async def stream(self, plan: Plan, ctx: ExecContext) -> AsyncIterator[dict[str, Any] | str]:
        run = _Run(plan, ctx)
        task = asyncio.ensure_future(run.agents_phase())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_S)
                if done:
                    break
                yield "keep-alive"  # SSE comment: proxies and clients keep the connection while agents work
            task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        template: dict[str, Any] | None = None
        model: str | None = None
        if plan.strategy == "debate" and run.agg_chain:
            msgs = run.synth_messages()
            step = Step()
            text: list[str] = []
            try:
                async with aclosing(stream_chain(ctx, run.agg_chain, run.body | {"messages": msgs},
                                                 max_tokens=run.agg_max, prompt=run.bound(msgs),
                                                 allowance=remaining(ctx), effort="low", step=step)) as chunks:
                    async for ch in chunks:
                        template = template or ch
                        ch["model"] = model = step.model
                        for c in ch.get("choices") or ():
                            t = (c.get("delta") or {}).get("content")
                            if t:
                                text.append(t)
                        yield ch
            except (UpstreamError, ProxyError) as e:
                if template is not None:
                    raise  # bytes already went out: no silent switch to another answer
                run.note(role="aggregator", error=str(e))
                run.agg_failed = True
            if template is not None:
                run.note(role="aggregator", model=model, content="".join(text))
        if template is None:
            win = await run.vote()
            model = win.model
            base = chunk_base(ctx, None, model)
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            if win.content:
                yield {**base, "choices": [{"index": 0, "delta": {"content": win.content}, "finish_reason": None}]}
            yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": win.finish or "stop"}]}
        if ctx.want_transcript:
            yield {**chunk_base(ctx, template, model), "choices": [], "triage_transcript": run.transcript()}
        yield usage_chunk(ctx, template, model)
