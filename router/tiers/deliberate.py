"""deliberate: N agents answer in parallel, then vote or debate.

vote   self-consistency: a strict majority of normalised final answers wins
       outright; otherwise the aggregator (if configured) picks a candidate by
       number, else the plurality (first agent on ties) wins. Picking costs a
       few output tokens where synthesising would cost a whole answer.
debate R rounds; from round 2 every agent sees every agent's previous answer,
       then the aggregator synthesises the final answer.

Diversity: identical agents on a deterministic upstream (or temperature 0)
vote unanimously and cost N times for nothing. Agent 1 answers exactly as the
client asked; every other agent gets its own seed, a temperature spread and a
distinct perspective (`votes.agent_variation`).

Prompt layout is cache-first: every agent of a round shares the same prefix
(the client's conversation, then one block with all answers in agent order,
then a fixed instruction); only the agent's perspective message comes after
it, and the aggregator's prompt is that shared prefix, so providers' prompt
caches hit; cached tokens are billed at the cached rate through the ledger.

Agreement: the share of agents whose final answer (`answer_key`) matches the
plurality, per round, goes to the transcript and to the ledger
(`decision.outcome`).

Budget: each agent call gets its own allowance (its worst case), the
aggregator's worst case is held back from the start, and a debate round only
starts when what is left can pay for all of it; otherwise deliberation stops
early and the aggregator works with the last complete round.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any, AsyncGenerator, ClassVar, Literal

from pydantic import Field

from accounting.tokens import estimate_prompt_tokens
from router.http.errors import ProxyError, budget_exceeded
from router.tiers import cost
from router.tiers.base import ExecContext, Plan, TierConfig
from router.tiers.fast import base_body, chunk_base, message_chunks, remaining, usage_chunk, usage_totals
from router.tiers.table import Knobs, RateInfo, TierTable, clamp_effort, effort_setup
from router.tiers.votes import (
    _INT,
    DEBATE_INSTRUCTION,
    PICK_INSTRUCTION,
    SYNTH_INSTRUCTION,
    agent_variation,
    agreement,
    answer_key,
    answers_block,
    message_key,
    message_text,
    tally,
)
from router.upstream.chain import Step, complete_chain, prompt_bound, stream_chain, worst_case
from router.upstream.errors import UpstreamError

__all__ = ["DeliberateConfig", "DeliberateTable", "DeliberateTier", "answer_key", "answers_block", "tally"]

KEEPALIVE_S = 5.0
DEFAULT_AGENTS = 3                # a deliberate tier listing a single model: that many copies
MIN_AGENTS = 2


class DeliberateConfig(TierConfig):
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    thinking_budget_tokens: int | None = Field(default=None, ge=1)
    strategy: Literal["vote", "debate"] = "vote"
    rounds: int = Field(default=1, ge=1, le=5)
    aggregator: str | None = None

    def referenced_models(self) -> dict[str, str]:
        refs = super().referenced_models()
        if self.aggregator:
            refs["aggregator"] = self.aggregator
        return refs


class DeliberateTable(TierTable):
    def __init__(self, tier: DeliberateTier, spec: DeliberateConfig, rate: dict[str, RateInfo]):
        super().__init__(tier, spec, rate)
        self.effort, self.think_scale = effort_setup(spec, None)
        self.strategy = spec.strategy
        self.rounds = spec.rounds if spec.strategy == "debate" else 1
        agg = spec.aggregator or (self.chain[0] if spec.strategy == "debate" else None)
        self.aggregator = agg
        self.agg_chain = list(dict.fromkeys([agg, *self.chain])) if agg else []
        self.agg_rates: list[cost.Rate] = [(rate[m][0], rate[m][1]) for m in self.agg_chain]
        self.agg_native = bool(agg and rate[agg][2])
        self.agents = self.models if len(self.models) > 1 else self.models * DEFAULT_AGENTS

    def think_tokens(self, effort: str | None) -> int:
        # Agents without native reasoning just answer; diversity comes from the agents.
        return int(cost.NATIVE_THINK[effort] * self.think_scale) if (effort and self.native_any) else 0

    def build_ladder(self, answer: int, client_effort: str | None) -> list[Knobs]:
        effort = clamp_effort(self.effort, client_effort)
        n, r = len(self.agents), self.rounds
        out = [Knobs(effort, n, r, answer, "")]
        for rr in range(r - 1, 0, -1):
            out.append(Knobs(effort, n, rr, answer, f"rounds {r}->{rr}"))
        for nn in range(n - 1, MIN_AGENTS - 1, -1):
            out.append(Knobs(effort, nn, 1, answer, f"agents {n}->{nn}" + (f", rounds {r}->1" if r > 1 else "")))
        return out

    def agg_max(self, answer: int) -> int | None:
        if not self.aggregator:
            return None
        return cost.aggregator_max_tokens(answer, self.strategy == "debate", self.agg_native)

    def estimate(self, p: int, k: Knobs) -> tuple[float, int]:
        max_t = k.answer + self.think_tokens(k.effort)
        return cost.deliberation_cost(self.rates, self.agg_rates, p, k.agents, k.rounds, max_t,
                                      self.agg_max(k.answer)), max_t

    def plan(self, est: float, max_t: int, k: Knobs, p: int) -> Plan:
        return Plan(tier=self.name, models=self.agents[:k.agents], max_tokens=max_t, estimate_usd=est,
                    reasoning_effort=k.effort if self.native_any else None, strategy=self.strategy,
                    rounds=k.rounds, aggregator=self.aggregator, note=k.note, prompt_tokens=p,
                    answer_tokens=k.answer, fallbacks=self.chain)

    def primary_model(self) -> str:
        return self.agents[0]

PICK_DROP = frozenset({"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
                       "response_format", "logprobs", "top_logprobs", "n"})


class _Answer:
    __slots__ = ("agent", "model", "message", "finish")

    def __init__(self, agent: int, model: str, message: dict[str, Any], finish: str | None):
        self.agent = agent
        self.model = model
        self.message = message
        self.finish = finish

    @property
    def content(self) -> str:
        return message_text(self.message)

    @property
    def key(self) -> str:
        return message_key(self.message)


class _Run:
    """One deliberation: agents phase, then the final answer (vote or aggregator)."""

    def __init__(self, plan: Plan, ctx: ExecContext):
        self.plan = plan
        self.ctx = ctx
        self.body = base_body(ctx)
        self.messages: list[dict[str, Any]] = self.body["messages"]
        self.p0 = prompt_bound(ctx, self.messages, plan.prompt_tokens)
        self.p_agent = self.p0 + cost.AGENT_ROLE_TOKENS      # the shared prefix plus the agent's perspective
        pool = plan.fallbacks or list(dict.fromkeys(plan.models))
        self.chains = [[m, *[f for f in pool if f != m]] for m in plan.models]
        agg = plan.aggregator
        self.agg_chain = [agg, *[f for f in pool if f != agg]] if agg else []
        agg_native = bool(agg and any(d.supports_reasoning for d in ctx.deployments.get(agg, ())))
        out = plan.answer_tokens or plan.max_tokens
        self.agg_max = cost.aggregator_max_tokens(out, plan.strategy == "debate", agg_native)
        native = any(d.supports_reasoning for m in pool + list(plan.models) for d in ctx.deployments.get(m, ()))
        self.variation = [agent_variation(i, self.body, native) for i in range(len(plan.models))]
        self.answers: list[_Answer] = []
        self.agreement: list[float] = []     # per round
        self.rounds_run = 0
        self.stopped_early = False
        self.agg_failed = False  # a failed synthesis is not retried as a pick

    # -------------------------------------------------------------- budget

    def worst(self, chain: list[str], prompt: int, max_t: int) -> float:
        return worst_case(self.ctx, chain, prompt, max_t)

    def agg_reserve(self) -> float:
        if not self.agg_chain:
            return 0.0
        prompt = self.p0 + cost.quoted_tokens(len(self.plan.models), self.plan.max_tokens)
        return self.worst(self.agg_chain, prompt, self.agg_max)

    def note(self, **entry: Any) -> None:
        if self.ctx.want_transcript:
            self.ctx.transcript.append(entry)

    # -------------------------------------------------------------- agents

    async def _round(self, r: int, messages: list[dict[str, Any]], prompt: int, agents: list[int]) -> list[_Answer]:
        plan = self.plan

        async def one(i: int) -> _Answer:
            step = Step()
            chain = self.chains[i]
            params, tail = self.variation[i]
            # `prompt` includes AGENT_ROLE_TOKENS, so the bound holds for every agent's tail.
            body = {**self.body, **params, "messages": [*messages, *tail]}
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
            w = self.worst(chain, self.p_agent, plan.max_tokens)
            if w <= room + 1e-12:
                agents.append(i)
                room -= w
        if not agents:
            raise budget_exceeded("The reserved budget cannot pay for a single deliberation agent.")
        self.answers = await self._round(1, self.messages, self.p_agent, agents)
        self.rounds_run = 1
        self.agreement.append(agreement([a.content for a in self.answers], [a.key for a in self.answers]))
        for r in range(2, plan.rounds + 1):
            msgs = self.shared(self.answers, DEBATE_INSTRUCTION)
            prompt = self.bound(msgs) + cost.AGENT_ROLE_TOKENS
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
                self.agreement.append(agreement([a.content for a in new], [a.key for a in new]))
        self.ctx.outcome.update(agents=len(self.answers), agreement=round(self.agreement[-1], 4),
                                agreement_by_round=[round(a, 4) for a in self.agreement])

    def shared(self, answers: list[_Answer], instruction: str) -> list[dict[str, Any]]:
        return [*self.messages, {"role": "user", "content": answers_block([a.content for a in answers])},
                {"role": "user", "content": instruction}]

    def bound(self, msgs: list[dict[str, Any]]) -> int:
        """Prompt bound of a shared-layout prompt: the client's part is already known, count only the tail."""
        return self.p0 + estimate_prompt_tokens(msgs[len(self.messages):])

    # -------------------------------------------------------------- final answer

    async def vote(self) -> _Answer:
        answers = self.answers
        idx, votes = tally([a.content for a in answers], [a.key for a in answers])
        how = "majority"
        if votes * 2 <= len(answers) and self.agg_chain and not self.agg_failed and len(answers) > 1:
            n = len(answers)
            msgs = self.shared(answers, PICK_INSTRUCTION.format(n=n))
            step = Step()
            try:
                # the pick is a number: no tools, schema or logprobs for the aggregator's reply
                resp = await complete_chain(self.ctx, self.agg_chain, self.pick_body(msgs),
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

    def pick_body(self, msgs: list[dict[str, Any]]) -> dict[str, Any]:
        b = {k: v for k, v in self.body.items() if k not in PICK_DROP}
        b["messages"] = msgs
        return b

    @property
    def proposes_tools(self) -> bool:
        return any(a.message.get("tool_calls") for a in self.answers)

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
                "rounds_run": self.rounds_run, "stopped_early": self.stopped_early,
                "agreement_by_round": self.agreement, "entries": self.ctx.transcript}


class DeliberateTier:
    name: ClassVar[str] = "deliberate"
    tier = "deliberate"
    level: ClassVar[int | None] = 2
    default_quality: ClassVar[float] = 0.92
    config_model: ClassVar[type[TierConfig]] = DeliberateConfig
    keepalive: ClassVar[bool] = True  # agents work for a while; stream() sends keep-alives meanwhile

    def table(self, spec: TierConfig, rate: dict[str, RateInfo]) -> DeliberateTable:
        assert isinstance(spec, DeliberateConfig)
        return DeliberateTable(self, spec, rate)

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]:
        run = _Run(plan, ctx)
        await run.agents_phase()
        # tool calls are voted on (or picked), never rewritten by a synthesis
        if plan.strategy == "debate" and run.agg_chain and not run.proposes_tools:
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

    async def stream(self, plan: Plan, ctx: ExecContext) -> AsyncGenerator[dict[str, Any] | str, None]:
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
        if plan.strategy == "debate" and run.agg_chain and not run.proposes_tools:
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
            for ch in message_chunks(chunk_base(ctx, None, model), win.message, win.finish):
                yield ch
        if ctx.want_transcript:
            yield {**chunk_base(ctx, template, model), "choices": [], "triage_transcript": run.transcript()}
        yield usage_chunk(ctx, template, model)


# The executor's historical name.
DeliberateExecutor = DeliberateTier
