"""Reports and exports, computed from what settle/feedback wrote to Redis.

Reports read the per-day rollup hashes (O(days), not O(requests)); exports walk
the ledger streams and join each entry with its quality from the request index.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson
from redis.asyncio import Redis

from . import redis_keys as rk
from .budgets import BudgetStore, period_field
from .models import from_nusd

EXPORT_COLUMNS = [
    "request_id", "client_request_id", "tenant", "key_id", "ts", "virtual_model", "tier", "model", "complexity", "reason", "prompt",
    "quality", "comment", "cost_usd", "counterfactual_cost_usd", "prompt_tokens", "cached_tokens",
    "completion_tokens", "reasoning_tokens", "ttft_ms", "latency_ms", "streamed", "partial", "estimated", "status",
    "calls",
]
GROUPINGS = ("tier", "model", "day", "complexity")


def parse_since(since: str | None, now: datetime | None = None) -> datetime:
    """'7d', '24h', '30m' or an ISO date/time; default 7 days."""
    now = now or datetime.now(timezone.utc)
    if not since:
        return now - timedelta(days=7)
    m = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", since)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit]
    dt = datetime.fromisoformat(since)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _days(start: datetime, end: datetime) -> list[str]:
    d, out = start.date(), []
    while d <= end.date():
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def report(redis: Redis, tenant: str, since: str | None = "7d", by: str = "tier") -> list[dict[str, Any]]:
    """Rows of requests, cost, average cost, quality, cost-per-quality and savings vs the top tier.

    Day granularity: ``since`` selects whole UTC days. Cost-per-quality is the
    cost of the *rated* requests divided by the sum of their scores, i.e. dollars
    per unit of delivered quality; ``None`` until something is rated.
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}")
    now = datetime.now(timezone.utc)
    days = _days(parse_since(since, now), now)
    async with redis.pipeline(transaction=False) as p:
        for d in days:
            p.hgetall(rk.rollup(tenant, d))
        hashes = await p.execute()
    acc: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day, h in zip(days, hashes):
        for k, v in h.items():
            parts = _s(k).split("|")
            if by == "complexity":
                if parts[0] != "cx":
                    continue
                group, metric = parts[1], parts[3]
            else:
                if parts[0] == "cx":
                    continue
                tier, model, metric = parts
                group = {"tier": tier, "model": model, "day": day}[by]
            acc[group][metric] += int(_s(v))
    return [_row(by, g, m) for g, m in sorted(acc.items())]


def _row(by: str, group: str, m: dict[str, int]) -> dict[str, Any]:
    n, cost, cf = m.get("n", 0), from_nusd(m.get("cost", 0)), from_nusd(m.get("cf", 0))
    qn, qsum = m.get("qn", 0), m.get("qsum", 0) / 1_000_000
    qcost = from_nusd(m.get("qcost", 0))
    return {
        by: group,
        "requests": n,
        "cost_usd": cost,
        "avg_cost_usd": cost / n if n else 0.0,
        "quality": qsum / qn if qn else None,
        "rated": qn,
        "cost_per_quality_usd": qcost / qsum if qsum > 0 else None,
        "counterfactual_usd": cf,
        "savings_usd": cf - cost,
        "savings_pct": 100.0 * (cf - cost) / cf if cf > 0 else None,
        "prompt_tokens": m.get("pt", 0),
        "completion_tokens": m.get("ct", 0),
        "cached_tokens": m.get("cached", 0),
        "reasoning_tokens": m.get("rt", 0),
    }


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = sum(r["requests"] for r in rows)
    cost = sum(r["cost_usd"] for r in rows)
    cf = sum(r["counterfactual_usd"] for r in rows)
    return {"requests": n, "cost_usd": cost, "avg_cost_usd": cost / n if n else 0.0, "counterfactual_usd": cf,
            "savings_usd": cf - cost, "savings_pct": 100.0 * (cf - cost) / cf if cf > 0 else None}


async def tenants(redis: Redis) -> list[str]:
    names = {_s(t) for t in await redis.smembers(rk.tenants_index())}
    async for k in redis.scan_iter(match=rk.ledger_pattern(), count=500):  # every master, on Cluster
        names.add(rk.tenant_of_key(_s(k)))
    return sorted(names)


async def export_rows(redis: Redis, tenant: str | None = None, since: str | None = None,
                      batch: int = 1000) -> list[dict[str, Any]]:
    """Every ledger entry (of one tenant, or all) since ``since``, joined with its quality."""
    start = parse_since(since) if since else None
    min_id = f"{int(start.timestamp() * 1000)}-0" if start else "-"
    out: list[dict[str, Any]] = []
    for t in [tenant] if tenant else await tenants(redis):
        cursor = min_id
        while True:
            entries = await redis.xrange(rk.ledger(t), min=cursor, max="+", count=batch)
            if not entries:
                break
            recs = [orjson.loads(fields[b"d"] if b"d" in fields else fields["d"]) for _, fields in entries]
            async with redis.pipeline(transaction=False) as p:
                for r in recs:
                    p.hmget(rk.request(t, r["request_id"]), "q", "comment")
                qs = await p.execute()
            for r, (q, comment) in zip(recs, qs):
                out.append(_flatten(r, q, comment))
            last = _s(entries[-1][0])
            cursor = "(" + last
            if len(entries) < batch:
                break
    return out


def _flatten(r: dict[str, Any], q: Any, comment: Any) -> dict[str, Any]:
    calls = r.get("calls") or []
    row = {
        "request_id": r["request_id"], "client_request_id": r.get("client_request_id"), "tenant": r["tenant"], "key_id": r.get("key_id"), "ts": r.get("ts"),
        "virtual_model": r.get("virtual_model"), "tier": r.get("tier"), "model": r.get("model"),
        "complexity": r.get("complexity"), "reason": r.get("reason"), "prompt": r.get("prompt"),
        "quality": int(_s(q)) / 1_000_000 if q is not None else None,
        "comment": _s(comment) if comment else None,
        "cost_usd": r.get("cost_usd"), "counterfactual_cost_usd": r.get("counterfactual_cost_usd"),
        "prompt_tokens": sum(c.get("prompt_tokens", 0) for c in calls),
        "cached_tokens": sum(c.get("cached_tokens", 0) for c in calls),
        "completion_tokens": sum(c.get("completion_tokens", 0) for c in calls),
        "reasoning_tokens": sum(c.get("reasoning_tokens", 0) for c in calls),
        "ttft_ms": r.get("ttft_ms"), "latency_ms": r.get("latency_ms"), "streamed": r.get("streamed"),
        "partial": r.get("partial"), "estimated": r.get("estimated"), "status": r.get("status"),
        "calls": orjson.dumps(calls).decode(),
    }
    return row


def write_export(rows: Iterable[dict[str, Any]], fmt: str, dest: str | Path | None = None) -> bytes | None:
    """Serialize rows as jsonl, csv or parquet; to ``dest`` if given, else return the bytes."""
    rows = list(rows)
    if fmt == "jsonl":
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        data = buf.getvalue().encode()
    elif fmt == "parquet":
        import pyarrow as pa  # noqa: PLC0415 - optional, export only
        import pyarrow.parquet as pq  # noqa: PLC0415

        schema = pa.schema([
            ("request_id", pa.string()), ("client_request_id", pa.string()), ("tenant", pa.string()), ("key_id", pa.string()), ("ts", pa.float64()),
            ("virtual_model", pa.string()), ("tier", pa.string()), ("model", pa.string()),
            ("complexity", pa.float64()), ("reason", pa.string()), ("prompt", pa.string()),
            ("quality", pa.float64()), ("comment", pa.string()), ("cost_usd", pa.float64()),
            ("counterfactual_cost_usd", pa.float64()), ("prompt_tokens", pa.int64()), ("cached_tokens", pa.int64()),
            ("completion_tokens", pa.int64()), ("reasoning_tokens", pa.int64()), ("ttft_ms", pa.float64()),
            ("latency_ms", pa.float64()), ("streamed", pa.bool_()), ("partial", pa.bool_()),
            ("estimated", pa.bool_()), ("status", pa.string()), ("calls", pa.string()),
        ])
        table = pa.Table.from_pylist(rows, schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
    else:
        raise ValueError("format must be jsonl, csv or parquet")
    if dest is None:
        return data
    Path(dest).write_bytes(data)
    return None


async def usage(redis: Redis, tenant: str, key_id: str | None = None, since: str = "30d") -> dict[str, Any]:
    """What a key may see about its own tenant: spend, budgets, and a per-tier summary."""
    store = BudgetStore(redis)
    budgets = await store.show(rk.scope_tenant(tenant))
    if key_id:
        budgets += await store.show(rk.scope_key(key_id))
    scope = rk.scope_tenant(tenant)
    spend = {p: from_nusd(await redis.hget(rk.spend(tenant, scope), period_field(p)) or 0)
             for p in ("day", "month", "total")}
    rows = await report(redis, tenant, since, "tier")
    return {"tenant": tenant, "key_id": key_id, "spend_usd": spend, "budgets": budgets,
            "since": since, "by_tier": rows, "totals": totals(rows)}
