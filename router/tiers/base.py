"""The seam between the decision (router/policy.py) and the tier executors.

A `Plan` is what policy chose and accounting admitted; an executor runs it and
records every upstream attempt in `ctx.calls`, which is what gets billed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncGenerator, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

# Re-exported: callers that sized deliberation prompts imported these from here.
from router.tiers.cost import ANSWER_FRAME_TOKENS, NATIVE_THINK, PICK_TOKENS, PROMPT_FRAME_TOKENS, quoted_tokens

if TYPE_CHECKING:
    from accounting import PriceBook, UpstreamCall
    from router.tiers.table import RateInfo, TierTable
    from router.upstream import Deployment, Upstream

__all__ = ["ANSWER_FRAME_TOKENS", "NATIVE_THINK", "PICK_TOKENS", "PROMPT_FRAME_TOKENS", "quoted_tokens",
           "Plan", "Decision", "ExecContext", "TierConfig", "Tier"]


class TierConfig(BaseModel):
    """What every tier's config section has; a tier subclasses it with its own knobs.

    `extra="forbid"` on every subclass: a knob another tier understands (say `strategy` on `fast`)
    is a config error, not a silently ignored line.
    """

    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    quality: float | None = Field(default=None, ge=0, le=1)
    # tried after `models` when they fail; filled from LiteLLM's `fallbacks` when not given
    fallbacks: list[str] = Field(default_factory=list)

    def check_tiers(self, tiers: dict[str, "TierConfig"]) -> str | None:
        """What is wrong with how this section refers to other configured tiers (`path: why`), or None."""
        return None

    def referenced_models(self) -> dict[str, str]:
        """Every model_name this section names, by its path in the section, so the config can check
        each is in model_list."""
        refs = {f"models[{i}]": m for i, m in enumerate(self.models)}
        refs.update({f"fallbacks[{i}]": m for i, m in enumerate(self.fallbacks)})
        return refs


@dataclass(slots=True)
class Plan:
    tier: str                          # a registered tier's name, or passthrough
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
    stages: list["Plan"] = field(default_factory=list)  # a composite tier's sub-plans, each within estimate_usd
    options: dict[str, Any] = field(default_factory=dict)  # tier-specific execution settings (cascade checks)

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
        if self.strategy is not None:
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
    num_retries: int | None = None     # config's num_retries (LiteLLM); None = the default attempt bound
    transcript: list[dict[str, Any]] = field(default_factory=list)
    # What the tier observed while answering (deliberation agreement, cascade escalation), for the ledger.
    outcome: dict[str, Any] = field(default_factory=dict)
    # Deployment stickiness: requests with the same key (a workflow) go to the same deployment of a model,
    # so the provider's prompt cache sees their shared prefix; None spreads requests over deployments.
    affinity: str | None = None

    def spent_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)

    def spent_nusd(self) -> int:
        """The exact charge so far, in the integers settle books (each call rounded once, then summed)."""
        return sum(c.nusd() for c in self.calls)


class Tier(Protocol):
    """One tier: its config, its plan ladder and cost estimate (via `table`), and its executor.

    The registry (router/tiers/registry.py) lists the tiers; tier names, `triage/<name>` virtual
    models, the classifier-facing ranks and default qualities all derive from it. A new tier
    (e.g. cascade: answer fast, check, escalate) is one module implementing this plus one registry line.
    """

    name: ClassVar[str]
    # 0/1/2 when the classifier's fast/reasoning/deliberate verdict can ask for this tier; None otherwise
    # (such a tier is still chosen whenever its quality meets the target at a lower estimate).
    level: ClassVar[int | None]
    default_quality: ClassVar[float]
    config_model: ClassVar[type[TierConfig]]
    # True when stream() sends keep-alives before any upstream byte (so headers go out at once).
    keepalive: ClassVar[bool]

    def table(self, spec: TierConfig, rate: dict[str, RateInfo]) -> TierTable:
        """Per-config constants and the plan ladder; built once per config load."""
        ...

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]:
        """A normal chat.completion, usage summed over every call, with `usage.cost`."""
        ...

    def stream(self, plan: Plan, ctx: ExecContext) -> AsyncGenerator[dict[str, Any] | str, None]:
        """Chunk dicts, or a str for an SSE comment keep-alive."""
        ...
