"""What the review surfaces (dashboard, alerts) read: series, burn-down, routing mix, ledger pages.

Built on the same rollup hashes, spend hashes and ledger streams as reports.py,
with the same arithmetic (integer nano-USD summed, converted once), so a number
on the dashboard equals `triage ledger report` and `/v1/usage` to the last digit.
Every function takes the tenants the caller may see; the HTTP layer decides that.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from redis.asyncio import Redis

from . import redis_keys as rk
from .budgets import period_field
from .models import from_nusd, to_nusd
from .reports import _days, _flatten, _s, aggregate, parse_by, parse_field, parse_since

SERIES_BY = ("tier", "model", "tenant", "key")


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None]:
    """[start, end) of the budget period containing ``now``; (None, None) for 'total'."""
    if period == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=timezone.utc)
        return start, start + timedelta(days=1)
    if period == "month":
        start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
        days = calendar.monthrange(now.year, now.month)[1]
        return start, start + timedelta(days=days)
    return None, None


def projection(limit_usd: float, spent_usd: float, period: str, now: datetime,
               min_elapsed: float = 0.0) -> dict[str, Any]:
    """Spend at period end and the run-out time if the rate since the period start holds.

    ``exhausts_early`` is True when that rate runs the budget out before the period
    ends (and it has not run out yet). Nothing is projected for 'total' budgets, nor
    from less than ``min_elapsed`` of the period.
    """
    start, end = period_bounds(period, now)
    out: dict[str, Any] = {"period_start": start.isoformat() if start else None,
                           "period_end": end.isoformat() if end else None,
                           "projected_usd": None, "run_out_at": None, "exhausts_early": False, "elapsed": None}
    if start is None or end is None:
        return out
    total_s = (end - start).total_seconds()
    elapsed_s = max(0.0, (now - start).total_seconds())
    frac = elapsed_s / total_s
    out["elapsed"] = frac
    if elapsed_s <= 0 or frac < min_elapsed or spent_usd <= 0:
        return out
    rate = spent_usd / elapsed_s
    out["projected_usd"] = rate * total_s
    if spent_usd >= limit_usd:
        return out
    run_out = start + timedelta(seconds=limit_usd / rate)
    if run_out < end:
        out["run_out_at"] = run_out.isoformat(timespec="seconds")
        out["exhausts_early"] = True
    return out


async def _rollups(redis: Redis, tenants: list[str], days: list[str]) -> list[tuple[str, str, dict[Any, Any]]]:
    async with redis.pipeline(transaction=False) as p:
        for t in tenants:
            for d in days:
                p.hgetall(rk.rollup(t, d))
        hashes = await p.execute()
    it = iter(hashes)
    return [(t, d, next(it)) for t in tenants for d in days]


def _range(since: str | None, until: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    now = now or datetime.now(timezone.utc)
    start = parse_since(since or "30d", now)
    end = parse_since(until, now) if until else now
    if end < start:
        raise ValueError("'until' is before 'since'")
    if (end - start).days > 400:
        raise ValueError("a range is at most 400 days")
    return start, end


async def series(redis: Redis, tenants: list[str], by: str = "tier", since: str | None = "30d",
                 until: str | None = None) -> dict[str, Any]:
    """Cost and requests per UTC day, split by tier, model, tenant or key (all from the rollups)."""
    if by not in SERIES_BY:
        raise ValueError(f"by must be one of {', '.join(SERIES_BY)}")
    start, end = _range(since, until)
    days = _days(start, end)
    cost: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    reqs: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t, d, h in await _rollups(redis, tenants, days):
        for k, v in h.items():
            f = parse_field(k)
            if f is None or f[1] not in ("cost", "n"):
                continue
            group = t if by == "tenant" else f[0][by]
            (cost if f[1] == "cost" else reqs)[group][d] += int(_s(v))
    groups = sorted(set(cost) | set(reqs))
    return {
        "by": by, "days": days,
        "series": [{"name": g, "cost_usd": [from_nusd(cost[g][d]) for d in days],
                    "requests": [reqs[g][d] for d in days],
                    "total_cost_usd": from_nusd(sum(cost[g].values())), "total_requests": sum(reqs[g].values())}
                   for g in groups],
        "total_cost_usd": from_nusd(sum(sum(c.values()) for c in cost.values())),
        "total_requests": sum(sum(c.values()) for c in reqs.values()),
    }


async def routing(redis: Redis, tenants: list[str], since: str | None = "30d") -> dict[str, Any]:
    """Tier mix per complexity bucket, and cost per unit of rated quality per tier x bucket."""
    start, end = _range(since, None)
    days = _days(start, end)
    acc: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for _, _, h in await _rollups(redis, tenants, days):
        for k, v in h.items():
            f = parse_field(k)
            if f is None:
                continue
            acc[(f[0]["complexity"], f[0]["tier"])][f[1]] += int(_s(v))
    cells = []
    for (bucket, tier), m in sorted(acc.items()):
        qsum, qn = m.get("qsum", 0) / 1_000_000, m.get("qn", 0)
        qcost = from_nusd(m.get("qcost", 0))
        cells.append({"bucket": bucket, "tier": tier, "requests": m.get("n", 0), "cost_usd": from_nusd(m.get("cost", 0)),
                      "counterfactual_usd": from_nusd(m.get("cf", 0)), "rated": qn,
                      "quality": qsum / qn if qn else None,
                      "cost_per_quality_usd": qcost / qsum if qsum > 0 else None})
    return {"since": since, "cells": cells}


def _cost_nusd(r: dict[str, Any]) -> int:
    for k in ("cost_nusd", "cost_nanousd"):
        if isinstance(r.get(k), int):
            return r[k]
    return int(round(float(r.get("cost_usd") or 0.0) * 1_000_000_000))


async def ledger_rows(redis: Redis, tenants: list[str], since_ts: float | None = None, until_ts: float | None = None,
                      limit: int | None = None, filters: dict[str, str] | None = None,
                      batch: int = 500) -> list[dict[str, Any]]:
    """Ledger entries newest first across ``tenants``, filtered; each flattened like an export row."""
    filters = {k: v for k, v in (filters or {}).items() if v}
    hi = f"{int(until_ts * 1000)}" if until_ts else "+"
    lo = f"{int(since_ts * 1000)}" if since_ts else "-"
    out: list[dict[str, Any]] = []
    for t in tenants:
        cursor, got = hi, 0
        while True:
            entries: Any = await redis.xrevrange(rk.ledger(t), max=cursor, min=lo, count=batch)
            if not entries:
                break
            for _, fields in entries:
                raw = fields.get(b"d") if b"d" in fields else fields.get("d")
                r = orjson.loads(raw)
                row = _flatten(r, None, None)
                row["_cost_nusd"] = _cost_nusd(r)
                row["ts"] = r.get("ts")  # unix seconds here: the pages sort and bucket by it
                row["cost_usd"] = from_nusd(row["_cost_nusd"])
                if row["ts"] is None or (row["kind"] == "refusal" and "kind" not in filters):
                    continue  # refusals are counted on their own (``refusals``), not listed as requests
                if all(_match(row, k, v) for k, v in filters.items()):
                    out.append(row)
                    got += 1
            if limit is not None and got >= limit or len(entries) < batch:
                break
            cursor = "(" + _s(entries[-1][0])
    out.sort(key=lambda r: r["ts"], reverse=True)
    return out[:limit] if limit is not None else out


def _match(row: dict[str, Any], k: str, v: str) -> bool:
    if k == "status":
        return (row.get("status") or "").startswith(v)
    return str(row.get(k) or "") == v


async def request_detail(redis: Redis, request_id: str, tenants: list[str] | None) -> dict[str, Any] | None:
    """One ledger entry in full plus its feedback; None if unknown or not in ``tenants`` (None = any)."""
    # The request index lives in its tenant's slot, so look where the caller may see (None = any tenant).
    names = tenants if tenants is not None else sorted(_s(t) for t in await redis.smembers(rk.tenants_index()))
    idx: dict[str, str] = {}
    for t in names:
        idx = {_s(k): _s(v) for k, v in (await redis.hgetall(rk.request(t, request_id))).items()}
        if idx:
            break
    if not idx or (tenants is not None and idx.get("tenant") not in tenants):
        return None
    entries: Any = await redis.xrange(rk.ledger(idx["tenant"]), min=idx["sid"], max=idx["sid"], count=1)
    if not entries:
        return None
    fields = entries[0][1]
    rec = orjson.loads(fields.get(b"d") if b"d" in fields else fields.get("d"))
    rec["quality"] = int(idx["q"]) / 1_000_000 if idx.get("q") else None
    rec["comment"] = idx.get("comment") or None
    return rec


async def daily_cost(redis: Redis, tenant: str, days: list[str], tier: str | None = None,
                     model: str | None = None, key_id: str | None = None) -> list[int]:
    """A tenant's settled cost per day (nano-USD), optionally one key's, tier's or model's share."""
    out = []
    for _, _, h in await _rollups(redis, [tenant], days):
        total = 0
        for k, v in h.items():
            f = parse_field(k)
            if f is None or f[1] != "cost":
                continue
            if (tier and f[0]["tier"] != tier) or (model and f[0]["model"] != model) or (
                    key_id and f[0]["key"] != key_id):
                continue
            total += int(_s(v))
        out.append(total)
    return out


async def burn_down(redis: Redis, status: dict[str, Any], now: datetime | None = None,
                    min_elapsed: float = 0.0) -> dict[str, Any]:
    """A budget's cumulative spend per day of its period, remaining, and the projection to period end.

    The last cumulative point is the settled spend of the scope (the spend hash the
    admit script reads); earlier points come from the rollups.
    """
    now = now or datetime.now(timezone.utc)
    scope, period = status["scope"], status["period"]
    start, end = period_bounds(period, now)
    first = start or now - timedelta(days=29)
    days = _days(first, now)
    parts = scope.split(":")
    kind, name = parts[0], parts[1]
    tier = parts[3] if len(parts) == 4 and parts[2] == "tier" else None
    model = ":".join(parts[3:]) if len(parts) >= 4 and parts[2] == "model" else None
    if kind == "tenant":
        per_day = await daily_cost(redis, name, days, tier, model)
    else:
        owner = await redis.hget(rk.apikey(_s(await redis.get(rk.key_id(name)) or b"")), "tenant")
        per_day = await daily_cost(redis, _s(owner), days, tier, model, name) if owner else [0] * len(days)
    spent = status["spent_usd"]
    # 'total' budgets began before the window: start the curve at what was spent before it
    run = to_nusd(spent) - sum(per_day) if start is None else 0
    cum = []
    for v in per_day:
        run += v
        cum.append(from_nusd(run))
    if cum:
        cum[-1] = spent  # the authoritative figure; equal to the rollup sum unless a record is still spooled
    return {**status, "days": days, "cumulative_usd": cum, "window_spend_usd": from_nusd(sum(per_day)),
            "projection": projection(status["limit_usd"], spent, period, now, min_elapsed),
            "period_field": period_field(period, now)}


async def report_all(redis: Redis, tenants: list[str], since: str | None = "7d", by: str = "tier") -> list[dict[str, Any]]:
    """reports.report over several tenants, summed in integers before converting (one tenant: identical rows)."""
    dims = parse_by(by)
    now = datetime.now(timezone.utc)
    days = _days(parse_since(since, now), now)
    return aggregate(await _rollups(redis, tenants, days), dims)


async def spend_now(redis: Redis, tenants: list[str], now: datetime | None = None) -> dict[str, float]:
    """Settled spend today, this month and in total, summed over tenants (the tenant scopes' spend hashes)."""
    now = now or datetime.now(timezone.utc)
    fields = [period_field(p, now) for p in ("day", "month", "total")]
    async with redis.pipeline(transaction=False) as p:
        for t in tenants:
            p.hmget(rk.spend(t, rk.scope_tenant(t)), *fields)
        got = await p.execute()
    sums = [sum(int(float(_s(v))) for v in col if v is not None) for col in zip(*got)] if got else [0, 0, 0]
    return {"day": from_nusd(sums[0]), "month": from_nusd(sums[1]), "total": from_nusd(sums[2])}


async def refusals(redis: Redis, tenants: list[str], since: str | None = "30d") -> dict[str, Any]:
    """Requests refused before any spend (budget, per-query cap), from the rollups' ``refused`` counters."""
    start, end = _range(since, None)
    by_reason: dict[str, int] = defaultdict(int)
    for _, _, h in await _rollups(redis, tenants, _days(start, end)):
        for k, v in h.items():
            f = parse_field(k)
            if f is not None and f[1].startswith("ref:"):
                by_reason[f[1][4:]] += int(_s(v))
    return {"total": sum(by_reason.values()), "by_reason": dict(sorted(by_reason.items()))}
