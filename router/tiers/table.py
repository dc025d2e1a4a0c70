"""A tier's per-config table: its constants, its knob ladder and the plans the policy offers.

The policy (router/policy.py) only talks to `TierTable`; what differs per tier
(which knobs exist, how a knob setting is priced, what a Plan carries) is a
subclass in the tier's own module. Every price goes through router/tiers/cost.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from router.tiers import cost
from router.tiers.base import Plan, TierConfig

if TYPE_CHECKING:
    from router.tiers.base import Tier

RateInfo = tuple[float, float, bool]  # worst-case (input, output) USD per token, native reasoning
MIN_ANSWER_TOKENS = 32            # below this an answer is not worth paying for
EFFORTS = ("low", "medium", "high")
EFFORT_RANK = {"minimal": 0, "low": 0, "medium": 1, "high": 2}


class Knobs(NamedTuple):
    """One rung of the budget ladder."""

    effort: str | None
    agents: int
    rounds: int
    answer: int           # visible-answer tokens
    note: str             # what was reduced to get here, for the decision header


class TierTable:
    """One tier's per-config constants; nothing here is recomputed per request."""

    def __init__(self, tier: Tier, spec: TierConfig, rate: dict[str, RateInfo]):
        self.name = tier.name
        self.quality = spec.quality if spec.quality is not None else tier.default_quality
        self.models = list(spec.models)
        # the tier's models, then their fallbacks: estimates price the dearest of them
        self.chain = list(dict.fromkeys([*spec.models, *spec.fallbacks]))
        self.rates: list[cost.Rate] = [(rate[m][0], rate[m][1]) for m in self.chain]
        self.native_all = all(rate[m][2] for m in self.chain)
        self.native_any = any(rate[m][2] for m in self.chain)
        self.max_tokens = spec.max_tokens
        self.ladders: dict[tuple[int, str | None], list[Knobs]] = {}

    # ------------------------------------------------------------ per tier

    def build_ladder(self, answer: int, client_effort: str | None) -> list[Knobs]:
        """Knob settings from full to minimal (before the shared max_tokens steps)."""
        return [Knobs(None, 1, 1, answer, "")]

    def estimate(self, p: int, k: Knobs) -> tuple[float, int]:
        """(worst-case USD, max_tokens per call) of one knob setting at prompt bound `p`."""
        raise NotImplementedError

    def plan(self, est: float, max_t: int, k: Knobs, p: int) -> Plan:
        raise NotImplementedError

    def fit_answer(self, p: int, hi: int, k: Knobs, cap: float) -> int:
        """Largest answer length in [MIN_ANSWER_TOKENS, hi] under the cap, or 0. Cost is monotone in it."""
        lo = MIN_ANSWER_TOKENS
        if self.estimate(p, k._replace(answer=lo))[0] > cap:
            return 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.estimate(p, k._replace(answer=mid))[0] <= cap:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def primary_model(self) -> str:
        return self.chain[0]

    def think_tokens(self, effort: str | None) -> int:
        """Thinking tokens a call at this effort may add to max_tokens (0: this tier does not think)."""
        return 0

    # ------------------------------------------------------------ shared

    def ladder(self, answer: int, client_effort: str | None) -> list[Knobs]:
        """Memoised per (answer, client effort); bounded because client max_tokens vary."""
        key = (answer, client_effort)
        hit = self.ladders.get(key)
        if hit is None:
            if len(self.ladders) > 256:
                self.ladders.clear()
            hit = self.ladders[key] = self._with_shrinks(self.build_ladder(answer, client_effort), answer)
        return hit

    @staticmethod
    def _with_shrinks(out: list[Knobs], answer: int) -> list[Knobs]:
        e, nn, rr, _, note = out[-1]
        for div in (2, 4):
            a = max(answer // div, MIN_ANSWER_TOKENS)
            if a < out[-1].answer:
                out.append(Knobs(e, nn, rr, a, (note + ", " if note else "") + f"max_tokens {answer}->{a}"))
        return out

    def first_estimate(self, p: int, answer: int, client_effort: str | None) -> float:
        return self.estimate(p, self.ladder(answer, client_effort)[0])[0]

    def choice_estimate(self, p: int, answer: int, client_effort: str | None) -> float:
        """What the policy compares tiers by: the expected cost (a composite tier's differs from its
        worst case); admission still holds the worst case."""
        return self.first_estimate(p, answer, client_effort)

    def link(self, tables: dict[str, "TierTable"]) -> None:
        """A composite tier finds the tables of the tiers it runs (all tables exist by now)."""

    def plans(self, p: int, answer: int, client_effort: str | None, cap: float | None,
              rejected: list[dict[str, Any]]) -> list[Plan]:
        """Every rung the cap pays for; if none does, the last rung with max_tokens cut to fit exactly."""
        plans: list[Plan] = []
        ladder = self.ladder(answer, client_effort)
        for k in ladder:
            est, max_t = self.estimate(p, k)
            if cap is not None and est > cap:
                if len(rejected) < 24:
                    rejected.append({"tier": self.name, "estimate_usd": est,
                                     "why": f"over cap ${cap:.6f}" + (f" ({k.note})" if k.note else "")})
                continue
            plans.append(self.plan(est, max_t, k, p))
        if cap is not None and not plans:
            k = ladder[-1]
            fit = self.fit_answer(p, k.answer, k, cap)
            if fit:
                knobs = k.note.split("max_tokens")[0].rstrip(", ")
                k = k._replace(answer=fit, note=(knobs + ", " if knobs else "") + f"max_tokens {answer}->{fit} (cap)")
                est, max_t = self.estimate(p, k)
                plans.append(self.plan(est, max_t, k, p))
        return plans

    def min_plan(self, p: int, answer: int, client_effort: str | None) -> tuple[float, str]:
        """The cheapest this tier can ever answer this prompt for, and with which model."""
        k = self.ladder(answer, client_effort)[-1]
        est, _ = self.estimate(p, k._replace(answer=min(MIN_ANSWER_TOKENS, answer)))
        return est, self.primary_model()


class SingleCallTable(TierTable):
    """One answer over a fallback chain (fast, reasoning). Subclasses add thinking via the hooks."""

    def think_prompt_tokens(self, effort: str | None) -> int:
        return 0

    def think_steps(self, effort: str | None) -> int | None:
        return None

    def estimate(self, p: int, k: Knobs) -> tuple[float, int]:
        max_t = k.answer + self.think_tokens(k.effort)
        return cost.chain_cost(self.rates, p + self.think_prompt_tokens(k.effort), max_t), max_t

    def fit_answer(self, p: int, hi: int, k: Knobs, cap: float) -> int:
        # One call: cost is the max over the chain of linear functions, so solve each line directly.
        lo = MIN_ANSWER_TOKENS
        if self.estimate(p, k._replace(answer=lo))[0] > cap:
            return 0
        pp = p + self.think_prompt_tokens(k.effort)
        think = self.think_tokens(k.effort)
        best = hi
        for r in self.rates:
            if r[1] > 0:
                best = min(best, cost.tokens_within(r, pp, cap, hi + think) - think)
        return max(best, lo)

    def plan(self, est: float, max_t: int, k: Knobs, p: int) -> Plan:
        effort = k.effort
        return Plan(tier=self.name, models=self.chain, max_tokens=max_t, estimate_usd=est,
                    reasoning_effort=effort if (effort and self.native_any) else None,
                    think_steps=self.think_steps(effort), note=k.note, prompt_tokens=p, answer_tokens=k.answer)


def effort_setup(spec: Any, default_effort: str | None) -> tuple[str | None, float]:
    """(configured effort, thinking-budget scale): thinking_budget_tokens is the budget at the
    configured effort; other efforts scale from it."""
    effort = spec.reasoning_effort or default_effort
    base = cost.NATIVE_THINK[effort] if effort else None
    scale = (spec.thinking_budget_tokens / base) if (spec.thinking_budget_tokens and base) else 1.0
    return effort, scale


def clamp_effort(effort: str | None, client_effort: str | None) -> str | None:
    """A client may ask for less thinking than the tier's default, never more."""
    if effort and client_effort is not None and EFFORT_RANK[client_effort] < EFFORT_RANK[effort]:
        return EFFORTS[EFFORT_RANK[client_effort]]
    return effort
