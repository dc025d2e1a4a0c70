"""The decision: which tier, which knobs, within which budget.

`decide()` turns (classification, cap, prices, config) into candidate `Plan`s in
preference order; accounting's `admit()` reserves the first one that fits every
budget scope in one atomic step, so the policy never has to read balances.

Quality targets -> tiers: the complexity (calibrated P(a cheap single pass falls
short)) picks a *wanted* tier through the thresholds (config, else the
classifier's own). The wanted tier's configured `quality` is the target; the
plan is the cheapest configured tier whose quality meets it. Candidates then
follow the budget ladder: the chosen tier with full knobs, its reduced-knob
variants (effort, rounds, agents, then max tokens), then lower-quality tiers.

Every estimate is a worst case (router/tiers/cost.py: nothing cached, every
output token at the dearer of output/reasoning price, the dearest model of the
fallback chain), and the executors size max_tokens with the same formulas, so
the settled cost cannot exceed what was reserved.

What differs per tier (knobs, ladder, estimate) lives in the tier's module
(router/tiers/); this module only walks the registry.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from router.config import TriageConfig
from router.http.errors import ProxyError, budget_exceeded
from router.tiers import cost
from router.tiers.base import Decision, Plan
from router.tiers.reasoning import STEP_TOKENS, THINK_STEPS
from router.tiers.registry import DEFAULT_QUALITY, LEVELS, TIER_RANK, TIERS
from router.tiers.table import EFFORT_RANK, EFFORTS, MIN_ANSWER_TOKENS, RateInfo, TierTable

if TYPE_CHECKING:
    from accounting import PriceBook

__all__ = ["DEFAULT_QUALITY", "EFFORTS", "EFFORT_RANK", "MAX_PLANS", "MIN_ANSWER_TOKENS", "STEP_TOKENS",
           "THINK_STEPS", "TIER_RANK", "PolicyTables", "TierTable", "build_tables", "decide", "tables_for",
           "wanted_rank"]

MAX_PLANS = 12


class RequestKnobs(Protocol):
    """What the decision reads from the client's request (router.http.schemas.ChatRequest has it)."""

    @property
    def max_tokens(self) -> int | None: ...
    @property
    def max_completion_tokens(self) -> int | None: ...
    @property
    def reasoning_effort(self) -> str | None: ...


class Verdict(Protocol):
    """What the decision reads from the classifier (classifier.Classification has it)."""

    @property
    def complexity(self) -> float: ...
    @property
    def tier(self) -> str: ...
    @property
    def signals(self) -> Sequence[str]: ...


class PolicyTables:
    """Built once per config load (router/runtime.py stores it on the snapshot)."""

    __slots__ = ("config", "prices", "rate", "tiers", "th_reasoning", "th_deliberate", "allow_downgrade",
                 "default_max", "variants", "out_caps", "limits", "flat_reach", "lower")

    def __init__(self, config: TriageConfig, prices: Any, reach: int = 0, service_tier: str | None = None):
        self.config = config
        self.prices = prices
        self.variants: dict[tuple[tuple[int, ...], str | None], PolicyTables] = {}
        rate: dict[str, RateInfo] = {}
        for name in config.model_names:
            native = any(bool(e.model_info.supports_reasoning) for e in config.entries(name))
            rate[name] = (*cost.rate(prices, name, reach, service_tier), native)
        self.rate = rate
        # Registry order is quality order; a tier absent from the config is simply not offered.
        self.tiers: dict[str, TierTable] = {t.name: t.table(config.tiers[t.name], rate)
                                            for t in TIERS if t.name in config.tiers}
        for tt in self.tiers.values():
            tt.link(self.tiers)
        pol = config.policy
        self.th_reasoning = pol.reasoning_threshold
        self.th_deliberate = pol.deliberate_threshold
        self.allow_downgrade = pol.allow_downgrade
        self.default_max = pol.default_max_tokens
        # The most output tokens each tier's calls can ask for: the smallest known cap of its models
        # (every model of a chain gets the same max_tokens). Holds are sized from it, not from a default
        # a model could never reach.
        caps = getattr(prices, "output_caps", {}) or {}
        self.out_caps: dict[str, int] = {}
        for name, tt in self.tiers.items():
            known = [caps[m] for m in tt.chain if m in caps]
            if known:
                self.out_caps[name] = min(known)
        # Per tier: the most answer tokens a request may get when it asks for none (or for more).
        self.limits: dict[str, int] = {}
        for name, tt in self.tiers.items():
            limit = tt.max_tokens or self.default_max
            cap = self.out_caps.get(name)
            self.limits[name] = limit if cap is None else min(limit, cap)
        # Per tier: the tiers below it, best first (where a decision may step down to).
        self.lower: dict[str, list[TierTable]] = {
            name: sorted((x for x in self.tiers.values() if x.quality < tt.quality), key=lambda x: -x.quality)
            for name, tt in self.tiers.items()}
        # Prompts up to this many tokens (quote headroom included) cross no model's long-context band.
        self.flat_reach = min((prices.flat_below(n) for n in config.model_names), default=math.inf)


    def variant(self, prompt: int, service_tier: str | None) -> "PolicyTables":
        """These tables at the rates of a long prompt (long-context bands) or a priced service tier; the
        plain tables when neither applies, so ordinary requests pay nothing for this."""
        reach = prompt + cost.QUOTE_HEADROOM
        if not service_tier and reach <= self.flat_reach:
            return self
        bands = tuple(self.prices.bands(n, reach) for n in self.config.model_names)
        if not service_tier and not any(bands):
            return self
        k = (bands, service_tier)
        v = self.variants.get(k)
        if v is None:
            if len(self.variants) > 64:
                self.variants.clear()
            # the top of the highest band crossed: every prompt up to `reach` is priced at most at it
            v = self.variants[k] = PolicyTables(self.config, self.prices, reach, service_tier)
        return v


def build_tables(config: TriageConfig, prices: Any) -> PolicyTables:
    return PolicyTables(config, prices)


_cache: list[tuple[Any, Any, PolicyTables]] = []


def tables_for(config: TriageConfig, prices: Any) -> PolicyTables:
    """Fallback when the caller has no prebuilt tables: identity-keyed, tiny, so reloads do not leak."""
    for c, p, t in _cache:
        if c is config and p is prices:
            return t
    t = PolicyTables(config, prices)
    _cache.insert(0, (config, prices, t))
    del _cache[4:]
    return t


# ---------------------------------------------------------------- decide


def wanted_rank(tables: PolicyTables, complexity: float, clf_tier: str) -> int:
    rank = TIER_RANK.get(clf_tier, 0)
    if tables.th_reasoning is not None:
        rank = max(rank, 1) if complexity >= tables.th_reasoning else 0
    if tables.th_deliberate is not None:
        rank = 2 if complexity >= tables.th_deliberate else min(rank, 1)
    return rank


def decide(req: RequestKnobs, raw_body: dict[str, Any], classification: Verdict, cap_usd: float | None,
           config: TriageConfig, prices: PriceBook, prompt_tokens: int, forced_tier: str | None = None, concrete_model: str | None = None,
           *, tables: PolicyTables | None = None, pinned_tier: str | None = None) -> Decision:
    """Candidates in preference order. `forced_tier` (triage/<tier>) never steps down; `pinned_tier`
    (session stickiness) replaces the classifier's choice but may still step down to fit the budget."""
    t = tables if (tables is not None and tables.config is config) else tables_for(config, prices)
    t = t.variant(int(prompt_tokens), cost.service_tier(raw_body))
    c = float(classification.complexity)
    signals = list(classification.signals)
    p = int(prompt_tokens)
    requested = req.max_completion_tokens or req.max_tokens
    client_effort = req.reasoning_effort
    rejected: list[dict[str, Any]] = []

    if concrete_model is not None:
        return _passthrough(t, concrete_model, p, requested, cap_usd, c, signals, rejected)

    tiers = t.tiers
    if forced_tier is not None:
        chosen = tiers[forced_tier]
        target = chosen.quality
        scope = [chosen]
        reason = f"forced {forced_tier}"
    elif pinned_tier is not None and pinned_tier in tiers:
        chosen = tiers[pinned_tier]
        target = chosen.quality
        scope = [chosen]
        if t.allow_downgrade:
            scope += t.lower[chosen.name]
        reason = f"session pin -> {pinned_tier}"
    else:
        want = LEVELS[wanted_rank(t, c, classification.tier)]
        target = tiers[want].quality if want in tiers else DEFAULT_QUALITY[want]
        best: tuple[float, TierTable] | None = None
        for tt in tiers.values():
            a = _answer(tt, t, requested)
            est = tt.choice_estimate(p, a, client_effort)
            if tt.quality + 1e-9 < target:
                rejected.append({"tier": tt.name, "estimate_usd": est, "why": _below_target(tt.quality, target)})
                continue
            if best is None or est < best[0]:
                if best is not None:
                    rejected.append({"tier": best[1].name, "estimate_usd": best[0], "why": f"dearer than {tt.name}"})
                best = (est, tt)
            else:
                rejected.append({"tier": tt.name, "estimate_usd": est, "why": f"dearer than {best[1].name}"})
        if best is None:  # nothing configured reaches the target: the best we have
            best_tt = max(tiers.values(), key=lambda x: x.quality)
            best = (0.0, best_tt)
            rejected = [r for r in rejected if r["tier"] != best_tt.name]
        chosen = best[1]
        scope = [chosen]
        if t.allow_downgrade:
            scope += t.lower[chosen.name]
        reason = f"cx={c:.2f} " + _aiming(target, chosen.name)

    plans: list[Plan] = []
    for tt in scope:
        plans += tt.plans(p, _answer(tt, t, requested), client_effort, cap_usd, rejected)
        if len(plans) >= MAX_PLANS:
            del plans[MAX_PLANS:]
            break
    if not plans:
        _raise_below_minimum(t, scope, p, requested, client_effort, cap_usd)
    if plans[0].tier != chosen.name:
        reason += f", stepped down to {plans[0].tier} (cap)"
    return Decision(plans=plans, complexity=c, signals=signals, reason=reason, rejected=rejected, cap_usd=cap_usd,
                    preferred=chosen.name, target_quality=target)


# A handful of distinct values per config: formatted once, not per request.
@functools.lru_cache(maxsize=256)
def _below_target(quality: float, target: float) -> str:
    return f"quality {quality:.2f} < target {target:.2f}"


@functools.lru_cache(maxsize=256)
def _aiming(target: float, tier: str) -> str:
    return f"target q>={target:.2f} -> {tier}"


def _answer(tt: TierTable, t: PolicyTables, requested: int | None) -> int:
    limit = t.limits[tt.name]
    return min(requested, limit) if requested else limit


def _raise_below_minimum(t: PolicyTables, scope: list[TierTable], p: int, requested: int | None,
                         client_effort: str | None, cap: float | None) -> None:
    lo = min((tt.min_plan(p, _answer(tt, t, requested), client_effort) + (tt.name,) for tt in scope),
             key=lambda x: x[0])
    raise ProxyError(
        400,
        f"The per-query cost cap ${cap:.6f} is below the cheapest possible answer for this prompt: "
        f"${lo[0]:.6f} (tier {lo[2]}, model {lo[1]}, {MIN_ANSWER_TOKENS} output tokens). "
        f"Raise the cap to at least ${lo[0]:.6f}.",
        "invalid_request_error", "cost_cap_below_minimum", "x-triage-max-cost",
    )


def _passthrough(t: PolicyTables, model: str, p: int, requested: int | None, cap: float | None, c: float,
                 signals: list[str], rejected: list[dict[str, Any]]) -> Decision:
    chain = t.config.chain([model])  # LiteLLM fallbacks of a concrete model: priced at the dearest
    native = t.rate[model][2]
    i = max(t.rate[m][0] for m in chain)
    o = max(t.rate[m][1] for m in chain)
    r = (i, o)
    answer = requested or (t.default_max + (cost.NATIVE_THINK["medium"] if native else 0))
    model_cap = getattr(t.prices, "output_caps", {}).get(model)
    if model_cap is not None:
        answer = min(answer, model_cap)
    plans: list[Plan] = []
    for a, note in ((answer, ""), (max(answer // 2, MIN_ANSWER_TOKENS), f"max_tokens {answer}->{max(answer // 2, MIN_ANSWER_TOKENS)}")):
        est = cost.call_cost(r, p, a)
        if cap is not None and est > cap:
            rejected.append({"tier": "passthrough", "estimate_usd": est, "why": f"over cap ${cap:.6f}"})
            continue
        if not plans or a < plans[-1].max_tokens:
            plans.append(Plan(tier="passthrough", models=chain, max_tokens=a, estimate_usd=est, note=note,
                              prompt_tokens=p, answer_tokens=a))
    if not plans and cap is not None:
        fit = cost.tokens_within(r, p, cap, answer) if o > 0 else answer
        if fit >= MIN_ANSWER_TOKENS:
            plans.append(Plan(tier="passthrough", models=chain, max_tokens=fit, estimate_usd=cost.call_cost(r, p, fit),
                              note=f"max_tokens {answer}->{fit} (cap)", prompt_tokens=p, answer_tokens=fit))
        else:
            lo = cost.call_cost(r, p, MIN_ANSWER_TOKENS)
            raise ProxyError(
                400,
                f"The per-query cost cap ${cap:.6f} is below the cheapest possible answer from '{model}' for this "
                f"prompt: ${lo:.6f} ({MIN_ANSWER_TOKENS} output tokens). Raise the cap to at least ${lo:.6f}.",
                "invalid_request_error", "cost_cap_below_minimum", "x-triage-max-cost",
            )
    return Decision(plans=plans, complexity=c, signals=signals, reason=f"passthrough {model}", rejected=rejected,
                    cap_usd=cap, preferred="passthrough")


# Tiers that forward `n` to the provider: one call, n choices. Others run n executions (router/tiers/multi.py).
N_NATIVE = frozenset({"fast", "passthrough"})


def scale_for_choices(decision: Decision, n: int) -> None:
    """n choices cost up to n answers: every candidate's hold grows to match, and the cap still applies."""
    kept = []
    for p in decision.plans:
        p.estimate_usd *= n
        if decision.cap_usd is not None and p.estimate_usd > decision.cap_usd:
            decision.rejected.append({"tier": p.tier, "estimate_usd": p.estimate_usd,
                                      "why": f"n={n} choices over cap ${decision.cap_usd:.6f}"})
            continue
        kept.append(p)
    if not kept:
        raise budget_exceeded(f"The per-query cost cap cannot pay for n={n} choices; lower n or raise the cap.")
    decision.plans[:] = kept
