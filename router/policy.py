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

Every estimate is a worst case (nothing cached, every output token at the
dearer of output/reasoning price, the dearest model of the fallback chain),
and the executors send max_tokens no larger than the plan's, so the settled
cost cannot exceed what was reserved.
"""

from __future__ import annotations

from typing import Any

from router.config import TIERS, TriageConfig
from router.http.errors import ProxyError
from router.tiers.base import NATIVE_THINK, PICK_TOKENS, THINK_PROMPT_TOKENS, Decision, Plan, quoted_tokens

DEFAULT_QUALITY = {"fast": 0.70, "reasoning": 0.85, "deliberate": 0.92}
TIER_RANK = {t: i for i, t in enumerate(TIERS)}
EFFORTS = ("low", "medium", "high")
EFFORT_RANK = {"minimal": 0, "low": 0, "medium": 1, "high": 2}
# Think-then-answer for models without native reasoning: steps and tokens per step.
THINK_STEPS = {"low": 3, "medium": 6, "high": 10}
STEP_TOKENS = 96
MIN_ANSWER_TOKENS = 32            # below this an answer is not worth paying for
DEFAULT_AGENTS = 3                # deliberate tier listing a single model: that many copies
MIN_AGENTS = 2
MAX_PLANS = 12


class TierTable:
    """One tier's per-config constants; nothing here is recomputed per request."""

    __slots__ = ("name", "quality", "models", "chain", "rates", "native_all", "native_any", "effort",
                 "think_scale", "strategy", "rounds", "aggregator", "agg_chain", "agg_rates", "agg_native",
                 "max_tokens", "agents", "ladders")

    def __init__(self, name: str, spec: Any, rate: dict[str, tuple[float, float, bool]]):
        self.name = name
        self.quality = spec.quality if spec.quality is not None else DEFAULT_QUALITY[name]
        self.models = list(spec.models)
        self.chain = list(dict.fromkeys(spec.models))
        self.rates = [(rate[m][0], rate[m][1]) for m in self.chain]
        self.native_all = all(rate[m][2] for m in self.chain)
        self.native_any = any(rate[m][2] for m in self.chain)
        default_effort = "medium" if name == "reasoning" else None
        self.effort = spec.reasoning_effort or default_effort
        # thinking_budget_tokens is the budget at the configured effort; other efforts scale from it.
        base = NATIVE_THINK[self.effort] if self.effort else None
        self.think_scale = (spec.thinking_budget_tokens / base) if (spec.thinking_budget_tokens and base) else 1.0
        self.strategy = spec.strategy
        self.rounds = spec.rounds if spec.strategy == "debate" else 1
        agg = spec.aggregator or (self.chain[0] if spec.strategy == "debate" else None)
        self.aggregator = agg
        self.agg_chain = list(dict.fromkeys([agg, *self.chain])) if agg else []
        self.agg_rates = [(rate[m][0], rate[m][1]) for m in self.agg_chain]
        self.agg_native = bool(agg and rate[agg][2])
        self.max_tokens = spec.max_tokens
        self.agents = self.models if len(self.models) > 1 else self.models * DEFAULT_AGENTS
        self.ladders: dict[tuple[int, str | None], list[tuple[str | None, int, int, int, str]]] = {}

    def think_tokens(self, effort: str | None) -> int:
        if not effort:
            return 0
        if self.native_any:
            return int(NATIVE_THINK[effort] * self.think_scale)
        # Deliberate agents without native reasoning just answer; diversity comes from the agents.
        return THINK_STEPS[effort] * STEP_TOKENS if self.name != "deliberate" else 0


class PolicyTables:
    """Built once per config load (router/runtime.py stores it on the snapshot)."""

    __slots__ = ("config", "prices", "rate", "tiers", "th_reasoning", "th_deliberate", "allow_downgrade",
                 "default_max")

    def __init__(self, config: TriageConfig, prices: Any):
        self.config = config
        self.prices = prices
        rate: dict[str, tuple[float, float, bool]] = {}
        for name in config.model_names:
            p = prices.price(name)
            native = any(bool(e.model_info.supports_reasoning) for e in config.entries(name))
            # The worst case PriceBook.estimate uses: nothing cached, reasoning at the dearer rate.
            rate[name] = (max(p.input, p.cache_write), max(p.output, p.reasoning), native)
        self.rate = rate
        self.tiers = {t: TierTable(t, config.tiers[t], rate) for t in TIERS if t in config.tiers}
        pol = config.policy
        self.th_reasoning = pol.reasoning_threshold
        self.th_deliberate = pol.deliberate_threshold
        self.allow_downgrade = pol.allow_downgrade
        self.default_max = pol.default_max_tokens


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


# ---------------------------------------------------------------- estimates


def _chain(rates: list[tuple[float, float]], p: int, m: int) -> float:
    worst = 0.0
    for i, o in rates:
        c = p * i + m * o
        if c > worst:
            worst = c
    return worst


def aggregator_max_tokens(tt: TierTable, answer: int) -> int:
    out = answer if tt.strategy == "debate" else PICK_TOKENS
    return out + (NATIVE_THINK["low"] if tt.agg_native else 0)


def deliberate_cost(tt: TierTable, p: int, agents: int, rounds: int, agent_max: int, answer: int) -> float:
    q = quoted_tokens(agents, agent_max)
    cost = agents * _chain(tt.rates, p, agent_max)
    if rounds > 1:
        cost += (rounds - 1) * agents * _chain(tt.rates, p + q, agent_max)
    if tt.aggregator:
        cost += _chain(tt.agg_rates, p + q, aggregator_max_tokens(tt, answer))
    return cost


def _estimate(tt: TierTable, p: int, answer: int, effort: str | None, agents: int, rounds: int) -> tuple[float, int]:
    """(worst-case USD, max_tokens per call) of one knob setting."""
    think = tt.think_tokens(effort)
    max_t = answer + think
    if tt.name == "deliberate":
        return deliberate_cost(tt, p, agents, rounds, max_t, answer), max_t
    if effort and not tt.native_all:
        p += THINK_PROMPT_TOKENS
    return _chain(tt.rates, p, max_t), max_t


def _fit_answer(tt: TierTable, p: int, hi: int, effort: str | None, agents: int, rounds: int, cap: float) -> int:
    """Largest answer length in [MIN_ANSWER_TOKENS, hi] under the cap, or 0. Cost is monotone in it."""
    lo = MIN_ANSWER_TOKENS
    if _estimate(tt, p, lo, effort, agents, rounds)[0] > cap:
        return 0
    if tt.name != "deliberate":
        # One call: cost is max over the chain of linear functions, so solve each line directly.
        if effort and not tt.native_all:
            p += THINK_PROMPT_TOKENS
        think = tt.think_tokens(effort)
        best = hi
        for i, o in tt.rates:
            if o > 0:
                best = min(best, int((cap - p * i) / o) - think)
        return max(best, lo)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _estimate(tt, p, mid, effort, agents, rounds)[0] <= cap:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _ladder(tt: TierTable, answer: int, client_effort: str | None) -> list[tuple[str | None, int, int, int, str]]:
    """Knob settings from full to minimal: (effort, agents, rounds, answer_tokens, note); memoised per tier."""
    key = (answer, client_effort)
    hit = tt.ladders.get(key)
    if hit is None:
        if len(tt.ladders) > 256:  # client max_tokens vary; keep the memo bounded
            tt.ladders.clear()
        hit = tt.ladders[key] = _build_ladder(tt, answer, client_effort)
    return hit


def _build_ladder(tt: TierTable, answer: int, client_effort: str | None) -> list[tuple[str | None, int, int, int, str]]:
    out: list[tuple[str | None, int, int, int, str]] = []
    effort = tt.effort
    if effort and client_effort is not None and EFFORT_RANK[client_effort] < EFFORT_RANK[effort]:
        effort = EFFORTS[EFFORT_RANK[client_effort]]
    n = len(tt.agents) if tt.name == "deliberate" else 1
    r = tt.rounds
    if tt.name == "reasoning" and effort:
        for e in EFFORTS[EFFORT_RANK[effort]::-1]:
            out.append((e, 1, 1, answer, "" if e == effort else f"effort {effort}->{e}"))
    elif tt.name == "deliberate":
        out.append((effort, n, r, answer, ""))
        for rr in range(r - 1, 0, -1):
            out.append((effort, n, rr, answer, f"rounds {r}->{rr}"))
        for nn in range(n - 1, MIN_AGENTS - 1, -1):
            out.append((effort, nn, 1, answer, f"agents {n}->{nn}" + (f", rounds {r}->1" if r > 1 else "")))
    else:
        out.append((effort, 1, 1, answer, ""))
    e, nn, rr, _, note = out[-1]
    for div in (2, 4):
        a = max(answer // div, MIN_ANSWER_TOKENS)
        if a < out[-1][3]:
            out.append((e, nn, rr, a, (note + ", " if note else "") + f"max_tokens {answer}->{a}"))
    return out


def _plan(tt: TierTable, est: float, max_t: int, effort: str | None, n: int, rounds: int, answer: int,
          p: int, note: str) -> Plan:
    if tt.name == "deliberate":
        return Plan(tier="deliberate", models=tt.agents[:n], max_tokens=max_t, estimate_usd=est,
                    reasoning_effort=effort if tt.native_any else None, strategy=tt.strategy, rounds=rounds,
                    aggregator=tt.aggregator, note=note, prompt_tokens=p, answer_tokens=answer,
                    fallbacks=tt.chain)
    native = tt.native_any
    return Plan(tier=tt.name, models=tt.chain, max_tokens=max_t, estimate_usd=est,
                reasoning_effort=effort if (effort and native) else None,
                think_steps=THINK_STEPS[effort] if (effort and not tt.native_all) else None,
                note=note, prompt_tokens=p, answer_tokens=answer)


def _tier_plans(tt: TierTable, p: int, answer: int, client_effort: str | None, cap: float | None,
                rejected: list[dict[str, Any]]) -> list[Plan]:
    plans: list[Plan] = []
    ladder = _ladder(tt, answer, client_effort)
    for effort, n, rounds, a, note in ladder:
        est, max_t = _estimate(tt, p, a, effort, n, rounds)
        if cap is not None and est > cap:
            if len(rejected) < 24:
                rejected.append({"tier": tt.name, "estimate_usd": est, "why": f"over cap ${cap:.6f}" + (f" ({note})" if note else "")})
            continue
        plans.append(_plan(tt, est, max_t, effort, n, rounds, a, p, note))
    if cap is not None and not plans:
        # The smallest knob setting still overshoots: shrink max_tokens to exactly what the cap pays for.
        effort, n, rounds, a, note = ladder[-1]
        fit = _fit_answer(tt, p, a, effort, n, rounds, cap)
        if fit:
            est, max_t = _estimate(tt, p, fit, effort, n, rounds)
            knobs = note.split("max_tokens")[0].rstrip(", ")
            plans.append(_plan(tt, est, max_t, effort, n, rounds, fit, p,
                               (knobs + ", " if knobs else "") + f"max_tokens {answer}->{fit} (cap)"))
    return plans


def _min_plan(tt: TierTable, p: int, answer: int, client_effort: str | None) -> tuple[float, str]:
    effort, n, rounds, _, _ = _ladder(tt, answer, client_effort)[-1]
    est, _ = _estimate(tt, p, min(MIN_ANSWER_TOKENS, answer), effort, n, rounds)
    return est, tt.agents[0] if tt.name == "deliberate" else tt.chain[0]


# ---------------------------------------------------------------- decide


def wanted_rank(tables: PolicyTables, complexity: float, clf_tier: str) -> int:
    rank = TIER_RANK.get(clf_tier, 0)
    if tables.th_reasoning is not None:
        rank = max(rank, 1) if complexity >= tables.th_reasoning else 0
    if tables.th_deliberate is not None:
        rank = 2 if complexity >= tables.th_deliberate else min(rank, 1)
    return rank


def decide(req: Any, raw_body: dict[str, Any], classification: Any, cap_usd: float | None, config: TriageConfig,
           prices: Any, prompt_tokens: int, forced_tier: str | None = None, concrete_model: str | None = None,
           *, tables: PolicyTables | None = None, pinned_tier: str | None = None) -> Decision:
    """Candidates in preference order. `forced_tier` (triage/<tier>) never steps down; `pinned_tier`
    (session stickiness) replaces the classifier's choice but may still step down to fit the budget."""
    t = tables if (tables is not None and tables.config is config) else tables_for(config, prices)
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
            scope += sorted((x for x in tiers.values() if x.quality < chosen.quality), key=lambda x: -x.quality)
        reason = f"session pin -> {pinned_tier}"
    else:
        want = TIERS[wanted_rank(t, c, classification.tier)]
        target = tiers[want].quality if want in tiers else DEFAULT_QUALITY[want]
        best: tuple[float, TierTable] | None = None
        for tt in tiers.values():
            a = _answer(tt, t, requested)
            est = _ladder_first_estimate(tt, p, a, client_effort)
            if tt.quality + 1e-9 < target:
                rejected.append({"tier": tt.name, "estimate_usd": est, "why": f"quality {tt.quality:.2f} < target {target:.2f}"})
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
            lower = [x for x in tiers.values() if x.quality < chosen.quality]
            lower.sort(key=lambda x: -x.quality)
            scope += lower
        reason = f"cx={c:.2f} target q>={target:.2f} -> {chosen.name}"

    plans: list[Plan] = []
    for tt in scope:
        plans += _tier_plans(tt, p, _answer(tt, t, requested), client_effort, cap_usd, rejected)
        if len(plans) >= MAX_PLANS:
            del plans[MAX_PLANS:]
            break
    if not plans:
        _raise_below_minimum(t, scope, p, requested, client_effort, cap_usd)
    if plans[0].tier != chosen.name:
        reason += f", stepped down to {plans[0].tier} (cap)"
    return Decision(plans=plans, complexity=c, signals=signals, reason=reason, rejected=rejected, cap_usd=cap_usd,
                    preferred=chosen.name, target_quality=target)


def _answer(tt: TierTable, t: PolicyTables, requested: int | None) -> int:
    limit = tt.max_tokens or t.default_max
    return min(requested, limit) if requested else limit


def _ladder_first_estimate(tt: TierTable, p: int, answer: int, client_effort: str | None) -> float:
    effort, n, rounds, a, _ = _ladder(tt, answer, client_effort)[0]
    return _estimate(tt, p, a, effort, n, rounds)[0]


def _raise_below_minimum(t: PolicyTables, scope: list[TierTable], p: int, requested: int | None,
                         client_effort: str | None, cap: float | None) -> None:
    lo = min((_min_plan(tt, p, _answer(tt, t, requested), client_effort) + (tt.name,) for tt in scope),
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
    i, o, native = t.rate[model]
    answer = requested or (t.default_max + (NATIVE_THINK["medium"] if native else 0))
    plans: list[Plan] = []
    for a, note in ((answer, ""), (max(answer // 2, MIN_ANSWER_TOKENS), f"max_tokens {answer}->{max(answer // 2, MIN_ANSWER_TOKENS)}")):
        est = p * i + a * o
        if cap is not None and est > cap:
            rejected.append({"tier": "passthrough", "estimate_usd": est, "why": f"over cap ${cap:.6f}"})
            continue
        if not plans or a < plans[-1].max_tokens:
            plans.append(Plan(tier="passthrough", models=[model], max_tokens=a, estimate_usd=est, note=note,
                              prompt_tokens=p, answer_tokens=a))
    if not plans and cap is not None:
        fit = int((cap - p * i) / o) if o > 0 else answer
        if fit >= MIN_ANSWER_TOKENS:
            fit = min(fit, answer)
            plans.append(Plan(tier="passthrough", models=[model], max_tokens=fit, estimate_usd=p * i + fit * o,
                              note=f"max_tokens {answer}->{fit} (cap)", prompt_tokens=p, answer_tokens=fit))
        else:
            lo = p * i + MIN_ANSWER_TOKENS * o
            raise ProxyError(
                400,
                f"The per-query cost cap ${cap:.6f} is below the cheapest possible answer from '{model}' for this "
                f"prompt: ${lo:.6f} ({MIN_ANSWER_TOKENS} output tokens). Raise the cap to at least ${lo:.6f}.",
                "invalid_request_error", "cost_cap_below_minimum", "x-triage-max-cost",
            )
    return Decision(plans=plans, complexity=c, signals=signals, reason=f"passthrough {model}", rejected=rejected,
                    cap_usd=cap, preferred="passthrough")
