"""Replay a window of traffic under other policies.

For every request: re-decide with the variant's config (the recorded
complexity and cap, the same `policy.decide` the gateway runs), then cost the
chosen tier. A request that lands on the tier and settings it really ran with
keeps its measured cost; otherwise its cost is the tier's learned profile
(profiles.py) repriced at the variant's models and scaled for its knobs. What
is measured and what is estimated is counted per policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from accounting import PriceBook
from router.config import TriageConfig
from router.forecast.policies import PolicyVariant, apply
from router.forecast.profiles import Profile, Profiles, Row
from router.http.errors import ProxyError
from router.policy import PolicyTables, build_tables, decide

SECONDS_MONTH = 30.4375 * 86400
SECONDS_YEAR = 365.25 * 86400
DEFAULT_OUT_PER_CALL = 256        # visible tokens per call when no tier was ever observed
THINK_FILL = 0.5                  # share of a thinking budget a never-observed reasoning plan is assumed to use
DEFAULT_MS_PER_TOKEN = 20.0
FEW = 30                          # below this many observations a figure is flagged as uncertain


@dataclass
class Outcome:
    tier: str
    cost_usd: float
    source: str                   # measured | learned | learned:tier | structural | refused
    quality: float | None
    latency_s: float | None


@dataclass
class PolicyResult:
    name: str
    description: str
    n: int = 0
    refused: int = 0
    by_tier: dict[str, int] = field(default_factory=dict)
    cost_total: float = 0.0
    cost_sq: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)
    quality_sum: float = 0.0
    quality_n: int = 0
    latency_sum: float = 0.0
    latency_n: int = 0

    def add(self, o: Outcome) -> None:
        self.n += 1
        self.sources[o.source] = self.sources.get(o.source, 0) + 1
        if o.source == "refused":
            self.refused += 1
            return
        self.by_tier[o.tier] = self.by_tier.get(o.tier, 0) + 1
        self.cost_total += o.cost_usd
        self.cost_sq += o.cost_usd * o.cost_usd
        if o.quality is not None:
            self.quality_sum += o.quality
            self.quality_n += 1
        if o.latency_s is not None:
            self.latency_sum += o.latency_s
            self.latency_n += 1

    @property
    def served(self) -> int:
        return self.n - self.refused

    @property
    def mean_cost(self) -> float:
        return self.cost_total / self.served if self.served else 0.0

    @property
    def mean_cost_ci95(self) -> float:
        """Half-width of the 95% interval of the mean cost per request (request-to-request spread)."""
        k = self.served
        if k < 2:
            return float("nan")
        var = max(self.cost_sq / k - self.mean_cost ** 2, 0.0) * k / (k - 1)
        return 1.96 * math.sqrt(var / k)

    def as_dict(self, qps: float | None, current: "PolicyResult | None") -> dict[str, Any]:
        per_1k = self.mean_cost * 1000
        d: dict[str, Any] = {
            "policy": self.name, "settings": self.description, "requests": self.n, "refused": self.refused,
            "by_tier": dict(sorted(self.by_tier.items())),
            "cost_per_request_usd": self.mean_cost, "cost_per_request_ci95_usd": self.mean_cost_ci95,
            "cost_per_1k_usd": per_1k, "window_cost_usd": self.cost_total,
            "monthly_usd": self.mean_cost * qps * SECONDS_MONTH if qps else None,
            "annual_usd": self.mean_cost * qps * SECONDS_YEAR if qps else None,
            "expected_quality": self.quality_sum / self.quality_n if self.quality_n else None,
            "quality_coverage": self.quality_n / self.served if self.served else 0.0,
            "mean_latency_s": self.latency_sum / self.latency_n if self.latency_n else None,
            "cost_sources": dict(sorted(self.sources.items())),
            "measured_share": self.sources.get("measured", 0) / self.n if self.n else 0.0,
        }
        if current is not None and current.mean_cost > 0:
            d["delta_vs_current"] = self.mean_cost / current.mean_cost - 1.0
        return d


class Forecaster:
    def __init__(self, config: TriageConfig, prices: PriceBook, profiles: Profiles, tier_for: Any):
        self.config = config
        self.prices = prices
        self.profiles = profiles
        self.tier_for = tier_for  # complexity -> the classifier's tier suggestion
        self.base_tables = build_tables(config, prices)
        all_rows_out = [p for t in profiles.tiers_seen() if (p := profiles.get(t, 0.0)) is not None]
        calls = sum(p.calls * p.n for p in all_rows_out)
        self.out_per_call = (sum(p.out * p.n for p in all_rows_out) / calls) if calls else DEFAULT_OUT_PER_CALL
        mspt = [p.ms_per_out_token for p in all_rows_out if p.ms_per_out_token]
        self.ms_per_token = sum(mspt) / len(mspt) if mspt else DEFAULT_MS_PER_TOKEN

    def run(self, variant: PolicyVariant, rows: list[Row]) -> PolicyResult:
        cfg = self.config if variant.describe() == "as configured" else apply(variant, self.config)
        tables = build_tables(cfg, self.prices)
        res = PolicyResult(variant.name, variant.describe())
        for r in rows:
            res.add(self.outcome(r, variant, cfg, tables))
        return res

    def outcome(self, r: Row, variant: PolicyVariant, cfg: TriageConfig, tables: PolicyTables) -> Outcome:
        cls = SimpleNamespace(complexity=r.complexity, tier=self.tier_for(r.complexity), signals=[])
        req = SimpleNamespace(max_tokens=None, max_completion_tokens=None, reasoning_effort=None)
        try:
            d = decide(req, {}, cls, r.cap_usd, cfg, self.prices, r.client_prompt, forced_tier=variant.force,
                       tables=tables)
        except ProxyError:
            return Outcome("", 0.0, "refused", None, None)
        plan = d.plans[0]
        tier = plan.tier
        q, _ = self.profiles.quality(tier, r.complexity)
        if tier == r.tier and self._same_settings(tier, cfg):
            lat = r.latency_ms / 1000 if r.latency_ms else None
            return Outcome(tier, r.cost_usd, "measured", q, lat)
        prof = self.profiles.get(tier, r.complexity) or self._structural(plan, tables)
        cost, tokens = self._reprice(prof, tier, r.client_prompt, cfg, tables)
        mspt = prof.ms_per_out_token or self.ms_per_token
        return Outcome(tier, cost, prof.source, q, tokens * mspt / 1000)

    # ---------------------------------------------------------------- pieces

    def _same_settings(self, tier: str, cfg: TriageConfig) -> bool:
        a, b = self.config.tiers.get(tier), cfg.tiers.get(tier)
        return a is not None and b is not None and a.model_dump() == b.model_dump()

    def _structural(self, plan: Any, tables: PolicyTables) -> Profile:
        """A tier never seen in the window: its calls from the plan, outputs at the observed per-call mean."""
        agents = max(len(plan.models), 1) if plan.tier == "deliberate" else 1
        calls = agents * plan.rounds + (1 if plan.aggregator or plan.tier == "deliberate" else 0)
        think = max(plan.max_tokens - (plan.answer_tokens or plan.max_tokens), 0)
        share = {m: 1 / len(plan.models) for m in plan.models} if plan.models else {}
        return Profile(n=0, in_mult=float(calls), out=self.out_per_call * calls, reasoning=think * THINK_FILL * agents,
                       calls=float(calls), models=share, source="structural")

    def _reprice(self, prof: Profile, tier: str, prompt: int, cfg: TriageConfig, tables: PolicyTables) -> tuple[float, float]:
        """USD and output tokens of one request of this profile, at the variant's models and knobs."""
        new_t, old_t = tables.tiers.get(tier), self.base_tables.tiers.get(tier)
        scale_calls, scale_think = 1.0, 1.0
        if new_t is not None and old_t is not None:
            old_agents, new_agents = len(getattr(old_t, "agents", [1])), len(getattr(new_t, "agents", [1]))
            old_rounds, new_rounds = getattr(old_t, "rounds", 1), getattr(new_t, "rounds", 1)
            scale_calls = (new_agents * new_rounds) / max(old_agents * old_rounds, 1)
            if hasattr(new_t, "think_tokens"):
                old_k = old_t.think_tokens(getattr(old_t, "effort", None))
                new_k = new_t.think_tokens(getattr(new_t, "effort", None))
                scale_think = new_k / old_k if old_k else 1.0
        models = self._map_models(prof.models, new_t.models if new_t is not None else list(prof.models),
                                  new_t.chain if new_t is not None else [])
        sent = prompt * prof.in_mult * scale_calls
        out = prof.out * scale_calls
        reasoning = prof.reasoning * scale_calls * scale_think
        usd = 0.0
        for m, share in models.items():
            rates = self.prices.rates(m, int(sent / max(prof.calls * scale_calls, 1)))
            p_tokens = sent * share
            usd += (p_tokens * (1 - prof.cached_share) * rates.input + p_tokens * prof.cached_share * rates.cached_input
                    + out * share * rates.output + reasoning * share * rates.reasoning)
        return usd, out + reasoning

    @staticmethod
    def _map_models(shares: dict[str, float], tier_models: list[str], chain: list[str]) -> dict[str, float]:
        """Token shares moved onto the variant's models: a model it still uses (or falls back to) keeps its
        share; the rest goes evenly to the tier's other models (its first model when all are kept)."""
        models = list(dict.fromkeys(tier_models))
        if not shares:
            return {models[0]: 1.0} if models else {}
        total = sum(shares.values()) or 1.0
        kept = {m: s for m, s in shares.items() if m in models or m in chain}
        moved = total - sum(kept.values())
        if moved > 1e-12:
            targets = [m for m in models if m not in kept] or models[:1]
            for m in targets:
                kept[m] = kept.get(m, 0.0) + moved / len(targets)
        return {m: s / total for m, s in kept.items()}


def observed_qps(rows: list[Row]) -> float | None:
    ts = [r.ts for r in rows if r.ts]
    if len(ts) < 2 or max(ts) <= min(ts):
        return None
    return len(ts) / (max(ts) - min(ts))
