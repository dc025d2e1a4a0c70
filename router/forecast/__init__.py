"""`triage forecast`: what other routing policies would cost on this traffic.

profiles.py learns per-request token shapes by tier x complexity from the
ledger; policies.py describes the variants; engine.py re-decides each request
under a variant and prices it; sweep.py varies the reasoning depth; render.py
prints and plots. `forecast()` ties them together and states its assumptions.
"""

from __future__ import annotations

from typing import Any, Callable

from accounting import PriceBook
from router.config import TriageConfig
from router.forecast.engine import FEW, Forecaster, observed_qps
from router.forecast.policies import PolicyVariant
from router.forecast.profiles import Profiles, Row

__all__ = ["forecast", "Forecaster", "Profiles", "PolicyVariant", "Row"]


def forecast(config: TriageConfig, prices: PriceBook, rows: list[Row], variants: list[PolicyVariant],
             tier_for: Callable[[float], str], qps: float | None = None,
             learn_from: list[Row] | None = None) -> tuple[dict[str, Any], Forecaster]:
    """Every variant over `rows`; profiles are learned from `learn_from` (default: the rows themselves)."""
    profiles = Profiles(rows if learn_from is None else learn_from)
    fc = Forecaster(config, prices, profiles, tier_for)
    if not any(v.name == "current" for v in variants):
        variants = [PolicyVariant("current"), *variants]
    results = [fc.run(v, rows) for v in variants]
    current = next(r for r in results if r.name == "current")
    obs = observed_qps(rows)
    rate = qps if qps else obs
    out: dict[str, Any] = {
        "requests": len(rows), "qps": rate,
        "qps_source": "given" if qps else ("observed in the window" if obs else "unknown"),
        "price_map_version": prices.version,
        "policies": [r.as_dict(rate, current) for r in results],
    }
    out["assumptions"] = _assumptions(fc, profiles, results, rate, learn_from is not None)
    return out, fc


def _assumptions(fc: Forecaster, profiles: Profiles, results: list[Any], qps: float | None,
                 external: bool) -> list[str]:
    a = [
        "Each request keeps its recorded complexity and per-query cap and is re-decided with the policy's rules "
        "(budgets are not replayed; the original max_tokens is not recorded, so tier defaults apply).",
        "A request that keeps its tier and that tier's settings keeps its measured cost; any other is priced from "
        "the tier's token profile learned from the ledger (per complexity bucket, else the tier overall), "
        "repriced at the policy's models; agents x rounds and thinking budgets scale that profile.",
    ]
    seen = profiles.tiers_seen()
    for t in fc.config.tiers:
        p = profiles.get(t, 0.0)
        n = p.n if p else 0
        if n == 0:
            a.append(f"Tier {t!r} never ran in the learning window: its cost is a structural estimate (the plan's "
                     f"calls x {fc.out_per_call:.0f} output tokens per call, half the thinking budget).")
        elif n < FEW:
            a.append(f"Tier {t!r}: only {n} observed requests; its profile is uncertain.")
    rated = {t: profiles.quality(t, 0.0)[1] for t in seen}
    if not any(rated.values()):
        a.append("No feedback in the window: expected quality is unknown.")
    else:
        few = [f"{t} ({n})" for t, n in rated.items() if n < FEW]
        if few:
            a.append("Expected quality rests on few ratings for: " + ", ".join(few) + ".")
    a.append("Monthly and annual costs: mean cost per request x QPS x seconds ("
             + (f"{qps:.3g} QPS" if qps else "no QPS known: pass --qps") + ").")
    if external:
        a.append("Token profiles were learned from the ledger; the prompts themselves were classified now.")
    a.append("'±95%' is the spread of the mean over requests, not model error in the profiles.")
    return a
