"""The seam between the decision (router/policy.py) and the tier executors.

A `Plan` is what policy chose and accounting admitted; an executor runs it and
records every upstream attempt in `ctx.calls`, which is what gets billed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounting import PriceBook, UpstreamCall
    from router.upstream import Deployment, Upstream

# Prompt-token allowance for the think-then-answer instruction a non-native
# reasoning model gets; shared so the policy's estimate and the executor agree.
THINK_PROMPT_TOKENS = 96
# Thinking-token budget added to max_tokens for a native reasoning model, by effort.
NATIVE_THINK = {"low": 1024, "medium": 4096, "high": 16384}
ANSWER_FRAME_TOKENS = 16    # per agent answer quoted into a debate/aggregator prompt
PROMPT_FRAME_TOKENS = 160   # instructions wrapped around the quoted answers
PICK_TOKENS = 16            # an aggregator that picks a candidate replies with its number


def quoted_tokens(agents: int, agent_max: int) -> int:
    """Bound on what quoting every agent's answer adds to a prompt (debate rounds, aggregator)."""
    return agents * (agent_max + ANSWER_FRAME_TOKENS) + PROMPT_FRAME_TOKENS


@dataclass(slots=True)
class Plan:
    tier: str                          # fast | reasoning | deliberate | passthrough
    models: list[str]                  # model_names: fallback chain, or the agents for deliberate
    max_tokens: int                    # output cap sent upstream on every call of this plan
    estimate_usd: float                # worst case for the whole plan; what gets reserved
    reasoning_effort: str | None = None
    think_steps: int | None = None     # think-then-answer budget for non-native reasoning models
    strategy: str | None = None        # vote | debate
    rounds: int = 1
    aggregator: str | None = None
    note: str = ""                     # knob changes made to fit the budget
    prompt_tokens: int = 0             # the prompt-token bound the estimate was made with
    answer_tokens: int = 0             # visible-answer share of max_tokens (the rest is thinking budget)
    fallbacks: list[str] = field(default_factory=list)  # deliberate: models an agent/aggregator may fall back to

    @property
    def primary_model(self) -> str:
        return self.models[0]

    def knobs(self) -> dict[str, Any]:
        """The settings that shape cost and quality, for the ledger (vote vs debate at equal spend)."""
        k: dict[str, Any] = {"max_tokens": self.max_tokens, "estimate_usd": self.estimate_usd}
        if self.reasoning_effort:
            k["reasoning_effort"] = self.reasoning_effort
        if self.think_steps:
            k["think_steps"] = self.think_steps
        if self.tier == "deliberate":
            k.update(strategy=self.strategy, agents=len(self.models), rounds=self.rounds, aggregator=self.aggregator)
        return k


@dataclass(slots=True)
class Decision:
    plans: list[Plan]                  # candidates in preference order; admission takes the first that fits
    complexity: float
    signals: list[str]
    reason: str                        # short, for the x-triage-decision header
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"tier", "estimate_usd", "why"}
    cap_usd: float | None = None
    preferred: str = ""                # the tier the quality target asked for, before budget
    target_quality: float | None = None


@dataclass(slots=True)
class ExecContext:
    upstream: "Upstream"
    deployments: dict[str, list["Deployment"]]   # model_name -> deployments (LiteLLM allows several)
    prices: "PriceBook"
    request_id: str
    body: dict[str, Any]               # the client's body; executors copy it and set model/max_tokens
    budget_usd: float                  # the admitted reservation: a plan must not spend beyond it
    calls: list["UpstreamCall"] = field(default_factory=list)
    want_transcript: bool = False
    transcript: list[dict[str, Any]] = field(default_factory=list)

    def spent_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)
