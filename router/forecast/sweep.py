"""What a reasoning depth costs: the reasoning tier at K thinking steps, per query and per year.

Depth K means K steps of `STEP_TOKENS` thinking tokens (the think-then-answer
unit; for native reasoners, the same thinking budget). Everything else about a
request (prompt, visible answer, models) is the reasoning tier's learned
profile over the window's prompts, so only the thinking varies:

  cost(K)    = mean over requests of  prompt x in_mult x input_rate + out x output_rate + K x STEP_TOKENS x reasoning_rate
  latency(K) = (out + K x STEP_TOKENS) x observed ms per output token
  annual(K)  = cost(K) x QPS x seconds per year;  multiplier(K) = cost(K) / cost(1)
"""

from __future__ import annotations

from typing import Any

from router.forecast.engine import SECONDS_YEAR, Forecaster
from router.forecast.profiles import Profile, Row
from router.tiers.reasoning import STEP_TOKENS

DEPTHS = (1, 2, 4, 8, 16)


def sweep_reasoning(fc: Forecaster, rows: list[Row], qps: float | None, depths: tuple[int, ...] = DEPTHS,
                    tier: str = "reasoning") -> dict[str, Any]:
    tables = fc.base_tables
    tt = tables.tiers.get(tier)
    if tt is None:
        raise ValueError(f"no {tier!r} tier is configured")
    out_rows = []
    base_cost = None
    for k in depths:
        total = tokens = 0.0
        sources: dict[str, int] = {}
        for r in rows:
            prof = fc.profiles.get(tier, r.complexity)
            if prof is None:
                plan = tt.plans(r.client_prompt, tt.max_tokens or tables.default_max, None, None, [])[0]
                prof = fc._structural(plan, tables)
            think = float(k * STEP_TOKENS)
            p = Profile(n=prof.n, in_mult=prof.in_mult, out=prof.out, reasoning=think, cached_share=prof.cached_share,
                        calls=prof.calls, models=prof.models, ms_per_out_token=prof.ms_per_out_token, source=prof.source)
            usd, toks = fc._reprice(p, tier, r.client_prompt, fc.config, tables)
            total += usd
            tokens += toks * (prof.ms_per_out_token or fc.ms_per_token)
            sources[prof.source] = sources.get(prof.source, 0) + 1
        n = max(len(rows), 1)
        per_q = total / n
        base_cost = per_q if base_cost is None else base_cost
        out_rows.append({
            "depth_steps": k, "thinking_tokens": k * STEP_TOKENS, "cost_per_query_usd": per_q,
            "latency_s": tokens / n / 1000, "annual_usd": per_q * qps * SECONDS_YEAR if qps else None,
            "multiplier_vs_k1": per_q / base_cost if base_cost else None, "profile_sources": sources,
        })
    return {"tier": tier, "qps": qps, "step_tokens": STEP_TOKENS, "rows": out_rows,
            "formula": __doc__.split("\n\n", 2)[2].strip() if __doc__ else ""}
