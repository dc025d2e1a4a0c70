"""What shadow runs measured: savings with a confidence interval, quality per tier x complexity bucket,
the routing's APGR on a tenant's labelled rows, and the labelled rows themselves for `triage train`.

A shadow (evaluation) row pairs a served request with a background run of the same request on another
tier (the top tier when the request was served cheaper, the cheapest tier when it escalated) and a judge's
scores of both answers (or a feedback score). Rows live in ``evals:<tenant>``, apart from the request
ledger, and their cost is evaluation spend, not the tenant's request spend.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import orjson
from redis.asyncio import Redis

from . import redis_keys as rk
from .models import from_nusd
from .periods import parse_since, tenants

Z95 = 1.959963984540054
SHORTFALL_MARGIN = 0.1  # the cheap answer "fell short" when it scores this much below the strong one


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def eval_rows(redis: Redis, tenant: str | None, since: str | None = None) -> list[dict[str, Any]]:
    start = parse_since(since) if since else None
    min_id = f"{int(start.timestamp() * 1000)}-0" if start else "-"
    out: list[dict[str, Any]] = []
    for t in [tenant] if tenant else await tenants(redis):
        cursor = min_id
        while True:
            entries: Any = await redis.xrange(rk.evals(t), min=cursor, max="+", count=1000)
            for _, f in entries:
                out.append(orjson.loads(f.get(b"d") or f.get("d")))
            if len(entries) < 1000:
                break
            cursor = "(" + _s(entries[-1][0])
    return out


def _mean_ci(xs: list[float]) -> tuple[float, float | None, float | None]:
    n = len(xs)
    if n == 0:
        return 0.0, None, None
    m = sum(xs) / n
    if n < 2:
        return m, None, None
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = Z95 * sd / math.sqrt(n)
    return m, m - h, m + h


def labelled(row: dict[str, Any]) -> dict[str, Any] | None:
    """The (cheap, strong) pair of one shadow row with scores, or None if it was never judged."""
    ev = row.get("evaluation") or {}
    cs, ss = ev.get("cheap_score"), ev.get("strong_score")
    if cs is None or ss is None:
        return None
    return ev


def measured(rows: list[dict[str, Any]], top_tier: str | None = None) -> dict[str, Any]:
    """Per served tier: measured saving per request against the top tier (mean and 95% CI), summed costs;
    per tier x complexity bucket: cost and measured quality; APGR of the routing on the labelled rows."""
    by_tier: dict[str, list[tuple[int, int]]] = defaultdict(list)
    cells: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    eval_cost = 0
    pairs: list[tuple[float, float, float, bool]] = []  # (complexity, cheap score, strong score, escalated)
    for r in rows:
        ev = r.get("evaluation") or {}
        eval_cost += int(r.get("cost_nusd") or 0)
        served, shadow = ev.get("served_tier"), ev.get("shadow_tier")
        if served and shadow and shadow == (top_tier or ev.get("top_tier")) and served != shadow:
            by_tier[served].append((int(ev.get("served_cost_nusd") or 0), int(ev.get("shadow_cost_nusd") or 0)))
        b = str(ev.get("bucket") or "na")
        for side in ("served", "shadow"):
            tier, score = ev.get(f"{side}_tier"), ev.get(f"{side}_score")
            if not tier:
                continue
            c = cells[(tier, b)]
            c["n"] += 1
            c["cost_nusd"] += int(ev.get(f"{side}_cost_nusd") or 0)
            if score is not None:
                c["qn"] += 1
                c["qsum"] += float(score)
        lab = labelled(r)
        if lab is not None:
            pairs.append((float(ev.get("complexity") or 0.0), float(lab["cheap_score"]), float(lab["strong_score"]),
                          bool(ev.get("escalated"))))
    tiers = []
    for tier, xs in sorted(by_tier.items()):
        diffs = [from_nusd(s - c) for c, s in xs]
        m, lo, hi = _mean_ci(diffs)
        served_sum, shadow_sum = sum(c for c, _ in xs), sum(s for _, s in xs)
        tiers.append({
            "tier": tier, "samples": len(xs), "served_cost_usd": from_nusd(served_sum),
            "top_tier_cost_usd": from_nusd(shadow_sum), "saving_per_request_usd": m,
            "saving_per_request_ci95_usd": None if lo is None else [lo, hi],
            "savings_pct": 100.0 * (shadow_sum - served_sum) / shadow_sum if shadow_sum > 0 else None,
        })
    grid = [{"tier": t, "complexity": b, "runs": int(c["n"]), "cost_usd": from_nusd(int(c["cost_nusd"])),
             "avg_cost_usd": from_nusd(int(c["cost_nusd"])) / c["n"] if c["n"] else 0.0,
             "quality": c["qsum"] / c["qn"] if c["qn"] else None, "judged": int(c["qn"])}
            for (t, b), c in sorted(cells.items())]
    return {"evaluations": len(rows), "evaluation_cost_usd": from_nusd(eval_cost), "by_tier": tiers,
            "by_tier_complexity": grid, "routing": routing_quality(pairs)}


def routing_quality(pairs: list[tuple[float, float, float, bool]]) -> dict[str, Any]:
    """PGR of the routing as it ran, and APGR of its complexity score (RouteLLM's definition: the area under
    performance-gap-recovered against the share of calls sent to the strong model)."""
    n = len(pairs)
    if n == 0:
        return {"labelled": 0, "pgr": None, "apgr": None, "strong_share": None}
    cheap = sum(p[1] for p in pairs)
    strong = sum(p[2] for p in pairs)
    gap = strong - cheap
    routed = sum(p[2] if p[3] else p[1] for p in pairs)
    share = sum(1 for p in pairs if p[3]) / n
    if abs(gap) < 1e-12:
        return {"labelled": n, "pgr": None, "apgr": None, "strong_share": share,
                "note": "cheap and strong scored alike on these rows: no gap to recover"}
    order = sorted(pairs, key=lambda p: -p[0])  # most complex first go to the strong model
    pgrs = []
    q = cheap
    pgrs.append((q - cheap) / gap)
    for p in order:
        q += p[2] - p[1]
        pgrs.append((q - cheap) / gap)
    # trapezoid over k/n, k = 0..n
    apgr = sum((pgrs[i] + pgrs[i + 1]) / 2 for i in range(n)) / n
    return {"labelled": n, "pgr": (routed - cheap) / gap, "apgr": apgr, "strong_share": share}


def training_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Labelled rows in the form `triage train` reads (``prompt`` + ``label``: 1.0 when the cheap tier's
    answer fell short of the strong tier's by more than SHORTFALL_MARGIN). Rows without a stored prompt
    (the tenant did not opt in to prompt storage) are kept with ``prompt: null`` for counting; the
    trainer skips them."""
    out = []
    for r in rows:
        ev = labelled(r)
        if ev is None:
            continue
        cs, ss = float(ev["cheap_score"]), float(ev["strong_score"])
        out.append({
            "id": f"shadow/{r.get('tenant')}/{ev.get('of_request')}", "source": "shadow",
            "tenant": r.get("tenant"), "of_request": ev.get("of_request"), "prompt": ev.get("prompt"),
            "label": 1.0 if cs + SHORTFALL_MARGIN < ss else 0.0,
            "cheap_tier": ev.get("cheap_tier"), "strong_tier": ev.get("strong_tier"),
            "cheap_score": cs, "strong_score": ss, "complexity": ev.get("complexity"),
            "escalated": bool(ev.get("escalated")), "judge_model": ev.get("judge_model"), "ts": r.get("ts"),
        })
    return out
