"""Reports and exports, computed from what settle/feedback wrote to Redis.

Reports read the per-day rollup hashes (O(days), not O(requests)); exports walk
the ledger streams and join each entry with its quality from the request index.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

import orjson
from redis.asyncio import Redis

from . import redis_keys as rk
from .budgets import BudgetStore, period_field
from .models import from_nusd, usd_str
from .periods import parse_since, tenants

EXPORT_COLUMNS = [
    "request_id", "client_request_id", "kind", "tenant", "key_id", "ts", "virtual_model", "tier", "model", "complexity", "classifier", "workflow",
    "reason", "prompt", "quality", "comment", "cost_usd", "cost_nusd", "counterfactual_cost_usd",
    "counterfactual_nusd", "counterfactual_method", "refused_estimate_usd", "refused_estimate_nusd",
    "billed_failures", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens", "ttft_ms",
    "latency_ms", "streamed", "partial", "estimated", "status", "calls",
]
# what a report can group by, combinably ("tier,model", or --by given several times)
DIMENSIONS = ("tenant", "key", "tier", "model", "day", "complexity", "workflow")
GROUPINGS = DIMENSIONS
_FIELD_DIMS = ("key", "tier", "model", "complexity", "workflow")  # order of the rollup field parts
COUNTERFACTUAL_METHOD = (
    "Per request, what the top tier would have cost for the same request: every agent, debate round and "
    "aggregator of the top tier's plan, at its models' prices (long-context and service-tier rates included), "
    "for the request's prompt, with each call's output length the mean of the top tier's own calls in the "
    "request's complexity bucket (learned from this ledger; until 20 such calls exist, the request's own answer "
    "length). Requests that ran on the top tier count their real cost. 'measured' rows come from shadow runs."
)


def _days(start: datetime, end: datetime) -> list[str]:
    d, out = start.date(), []
    while d <= end.date():
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class MissingExtra(RuntimeError):
    """An optional dependency this operation needs is not installed; the message says which extra."""


def parse_by(by: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """'tier', 'tier,model' or ['tier', 'model'] -> ('tier', 'model'); unknown names are a ValueError."""
    if not by:
        return ("tier",)
    parts: list[str] = []
    for b in [by] if isinstance(by, str) else list(by):
        parts += [x.strip() for x in b.split(",") if x.strip()]
    bad = [x for x in parts if x not in DIMENSIONS]
    if bad or not parts:
        raise ValueError(f"by must be one or more of {', '.join(DIMENSIONS)} (comma-separated)")
    return tuple(dict.fromkeys(parts))


async def report(redis: Redis, tenant: str | None, since: str | None = "7d",
                 by: str | list[str] | tuple[str, ...] = "tier", cold: Any = None) -> list[dict[str, Any]]:
    """Rows of requests, refusals, cost, average cost, quality, cost-per-quality and signed savings
    against the top tier, grouped by any combination of DIMENSIONS; ``tenant=None`` = every tenant.

    Day granularity: ``since`` selects whole UTC days. Cost-per-quality is the
    cost of the *rated* requests divided by the sum of their scores, i.e. dollars
    per unit of delivered quality; ``None`` until something is rated. Money is
    summed in integer nano-USD and only then turned into dollars. With ``cold`` (a ``ColdLedger``),
    a day whose rollup hash has expired is recomputed from the cold ledger's rows.
    """
    dims = parse_by(by)
    now = datetime.now(timezone.utc)
    days = _days(parse_since(since, now), now)
    names = [tenant] if tenant else await tenants(redis)
    async with redis.pipeline(transaction=False) as p:
        for t in names:
            for d in days:
                p.hgetall(rk.rollup(t, d))
        hashes = await p.execute()
    if cold is not None:
        hashes = await _fill_from_cold(redis, cold, names, days, hashes)
    it = iter(hashes)
    return aggregate(((t, d, next(it)) for t in names for d in days), dims)


def parse_field(k: Any) -> tuple[dict[str, str], str] | None:
    """A rollup field -> ({key, tier, model, complexity, workflow}, metric); None for another layout."""
    parts = _s(k).split("|")
    if len(parts) != 6:
        return None
    return dict(zip(_FIELD_DIMS, parts[:5])), parts[5]


def aggregate(hashes: Iterable[tuple[str, str, dict[Any, Any]]], dims: tuple[str, ...]) -> list[dict[str, Any]]:
    """Report rows from (tenant, day, rollup hash) triples, grouped by ``dims``; sums in integers."""
    acc: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t, day, h in hashes:
        for k, v in h.items():
            f = parse_field(k)
            if f is None:
                continue
            vals, metric = f
            vals["tenant"], vals["day"] = t, day
            acc[tuple(vals[d] for d in dims)][metric] += int(_s(v))
    return [_row(dims, g, m) for g, m in sorted(acc.items())]


def _row(dims: tuple[str, ...], group: tuple[str, ...], m: dict[str, int]) -> dict[str, Any]:
    n, cost, cf = m.get("n", 0), m.get("cost", 0), m.get("cf", 0)
    qn, qsum = m.get("qn", 0), m.get("qsum", 0) / 1_000_000
    qcost = m.get("qcost", 0)
    row: dict[str, Any] = dict(zip(dims, group))
    row.update({
        "requests": n,
        "cost_nusd": cost,
        "cost_usd": from_nusd(cost),
        "avg_cost_usd": from_nusd(cost) / n if n else 0.0,
        "quality": qsum / qn if qn else None,
        "rated": qn,
        "cost_per_quality_usd": from_nusd(qcost) / qsum if qsum > 0 else None,
        "counterfactual_nusd": cf,
        "counterfactual_usd": from_nusd(cf),
        # signed: a group that cost more than the top tier would have shows a negative saving
        "savings_nusd": cf - cost,
        "savings_usd": from_nusd(cf - cost),
        "savings_pct": 100.0 * (cf - cost) / cf if cf > 0 else None,
        "counterfactual_estimated": m.get("cfe", 0),
        "billed_failures": m.get("bf", 0),
        "refused": m.get("ref", 0),
        "refused_estimate_nusd": m.get("refest", 0),
        "refused_estimate_usd": from_nusd(m.get("refest", 0)),
        "prompt_tokens": m.get("pt", 0),
        "completion_tokens": m.get("ct", 0),
        "cached_tokens": m.get("cached", 0),
        "reasoning_tokens": m.get("rt", 0),
    })
    return row


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums of integer nano-USD; savings are net *and* split into the groups that saved and the groups
    that cost more, so an overspending tier is never netted away."""
    n = sum(r["requests"] for r in rows)
    cost = sum(r["cost_nusd"] for r in rows)
    cf = sum(r["counterfactual_nusd"] for r in rows)
    gain = sum(r["savings_nusd"] for r in rows if r["savings_nusd"] > 0)
    loss = sum(r["savings_nusd"] for r in rows if r["savings_nusd"] < 0)
    refused = sum(r.get("refused", 0) for r in rows)
    return {"requests": n, "cost_nusd": cost, "cost_usd": from_nusd(cost),
            "avg_cost_usd": from_nusd(cost) / n if n else 0.0,
            "counterfactual_nusd": cf, "counterfactual_usd": from_nusd(cf),
            "savings_nusd": cf - cost, "savings_usd": from_nusd(cf - cost),
            "savings_pct": 100.0 * (cf - cost) / cf if cf > 0 else None,
            "savings_gained_usd": from_nusd(gain), "savings_lost_usd": from_nusd(loss),
            "refused": refused, "refused_estimate_usd": from_nusd(sum(r.get("refused_estimate_nusd", 0) for r in rows))}


def report_meta(price_version: str | None = None) -> dict[str, Any]:
    """What every report names: the price map it was priced with and how savings were counted."""
    if price_version is None:
        from .prices import price_map_version  # noqa: PLC0415

        price_version = price_map_version()
    return {"price_map_version": price_version, "counterfactual_method": COUNTERFACTUAL_METHOD}





async def _fill_from_cold(redis: Redis, cold: Any, names: list[str], days: list[str],
                          hashes: list[Any]) -> list[Any]:
    out, it = [], iter(hashes)
    for t in names:
        mine = [next(it) for _ in days]
        gone = [d for d, h in zip(days, mine) if not h]
        got = await cold.rollups(redis, t, gone) if gone else {}
        out += [h or got.get(d, {}) for d, h in zip(days, mine)]
    return out


async def export_rows(redis: Redis, tenant: str | None = None, since: str | None = None,
                      batch: int = 1000, cold: Any = None) -> list[dict[str, Any]]:
    """Every ledger entry (of one tenant, or all) since ``since``, joined with its quality.

    With ``cold`` (a ``ColdLedger``), compacted entries come first, from Parquet, then the stream."""
    start = parse_since(since) if since else None
    min_id = f"{int(start.timestamp() * 1000)}-0" if start else "-"
    out: list[dict[str, Any]] = []
    for t in [tenant] if tenant else await tenants(redis):
        # The stream first, the cold watermark after: an entry compacted meanwhile is then either in
        # our stream pages or at/below the watermark (or both: its stream copy is dropped), never neither.
        hot: list[tuple[tuple[int, int], dict[str, Any]]] = []
        cursor = min_id
        while True:
            entries: Any = await redis.xrange(rk.ledger(t), min=cursor, max="+", count=batch)
            if not entries:
                break
            recs = [orjson.loads(fields[b"d"] if b"d" in fields else fields["d"]) for _, fields in entries]
            async with redis.pipeline(transaction=False) as p:
                for r in recs:
                    p.hmget(rk.request(t, r["request_id"]), "q", "comment")
                qs = await p.execute()
            for (sid, _), r, (q, comment) in zip(entries, recs, qs):
                ms, _, seq = _s(sid).partition("-")
                hot.append(((int(ms), int(seq or 0)), _flatten(r, q, comment)))
            last = _s(entries[-1][0])
            cursor = "(" + last
            if len(entries) < batch:
                break
        wm = await cold.watermark(redis, t) if cold is not None else None
        if wm is not None:
            recs_c = await cold.records(redis, t, start.timestamp() if start else None, wm=wm)
            async with redis.pipeline(transaction=False) as p:
                for r, _ in recs_c:
                    p.hmget(rk.request(t, r["request_id"]), "q", "comment")
                live = await p.execute()
            for (r, stored), (q, comment) in zip(recs_c, live):
                # feedback given after compaction is in the request index while it lives
                out.append(_flatten(r, q, comment) if q is not None else _flatten(r, *stored))
        out += [row for sid, row in hot if wm is None or sid > wm]
    return out


def iso_ts(ts: float | None) -> str | None:
    """ISO-8601 UTC with milliseconds, e.g. 2026-12-02T03:46:19.123Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flatten(r: dict[str, Any], q: Any, comment: Any) -> dict[str, Any]:
    calls = r.get("calls") or []
    cost_n = r.get("cost_nusd")
    if cost_n is None:  # a row written before nano-USD records
        cost_n = sum(int(c.get("cost_nusd") or round((c.get("cost_usd") or 0) * 1e9)) for c in calls)
    cf_n = r.get("counterfactual_nusd")
    if cf_n is None:
        cf_n = int(round((r.get("counterfactual_cost_usd") or 0) * 1e9))
    ref_n = r.get("refused_estimate_nusd")
    row = {
        "request_id": r["request_id"], "client_request_id": r.get("client_request_id"),
        "kind": r.get("kind") or "request", "tenant": r["tenant"],
        "key_id": r.get("key_id"), "ts": iso_ts(r.get("ts")),
        "virtual_model": r.get("virtual_model"), "tier": r.get("tier"), "model": r.get("model"),
        "complexity": r.get("complexity"), "cap_usd": (r.get("decision") or {}).get("cap_usd"),
        "classifier": (r.get("decision") or {}).get("classifier"), "workflow": r.get("workflow") or None, "reason": r.get("reason"),
        "prompt": r.get("prompt"),
        "quality": int(_s(q)) / 1_000_000 if q is not None else None,
        "comment": _s(comment) if comment else None,
        # derived from the integers (CSV and Parquet write them as exact decimals, see write_export)
        "cost_usd": from_nusd(cost_n), "cost_nusd": int(cost_n),
        "counterfactual_cost_usd": from_nusd(cf_n), "counterfactual_nusd": int(cf_n),
        "counterfactual_method": r.get("counterfactual_method"),
        "refused_estimate_usd": from_nusd(ref_n) if ref_n is not None else None, "refused_estimate_nusd": ref_n,
        "billed_failures": sum(1 for c in calls if c.get("billed_failure")),
        "prompt_tokens": sum(c.get("prompt_tokens", 0) for c in calls),
        "cached_tokens": sum(c.get("cached_tokens", 0) for c in calls),
        "completion_tokens": sum(c.get("completion_tokens", 0) for c in calls),
        "reasoning_tokens": sum(c.get("reasoning_tokens", 0) for c in calls),
        "ttft_ms": r.get("ttft_ms"), "latency_ms": r.get("latency_ms"), "streamed": r.get("streamed"),
        "partial": r.get("partial"), "estimated": r.get("estimated"), "status": r.get("status"),
        "calls": orjson.dumps(calls).decode(),
    }
    return row


_MONEY = {"cost_usd": "cost_nusd", "counterfactual_cost_usd": "counterfactual_nusd",
          "refused_estimate_usd": "refused_estimate_nusd"}


def _decimal_money(r: dict[str, Any]) -> dict[str, Any]:
    """Dollar columns as exact decimal strings from their nano-USD twins: never 1.1e-05, never rounded."""
    out = dict(r)
    for usd, n in _MONEY.items():
        if usd in r:
            out[usd] = usd_str(r[n]) if r.get(n) is not None else None
    return out


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection)."""
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


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
            w.writerow({k: ("" if v is None else _cell(v)) for k, v in _decimal_money(r).items()})
        data = buf.getvalue().encode()
    elif fmt == "parquet":
        try:
            import pyarrow as pa  # noqa: PLC0415 - optional, export only
            import pyarrow.parquet as pq  # noqa: PLC0415
        except ImportError:
            raise MissingExtra("parquet export needs the [parquet] extra: pip install 'triage-gateway[parquet]'") from None

        dec = pa.decimal128(20, 9)  # exact dollars to the nano-dollar
        schema = pa.schema([
            ("request_id", pa.string()), ("client_request_id", pa.string()), ("kind", pa.string()), ("tenant", pa.string()), ("key_id", pa.string()),
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("virtual_model", pa.string()), ("tier", pa.string()), ("model", pa.string()),
            ("complexity", pa.float64()), ("classifier", pa.string()), ("workflow", pa.string()), ("reason", pa.string()), ("prompt", pa.string()),
            ("quality", pa.float64()), ("comment", pa.string()), ("cost_usd", dec), ("cost_nusd", pa.int64()),
            ("counterfactual_cost_usd", dec), ("counterfactual_nusd", pa.int64()),
            ("counterfactual_method", pa.string()), ("refused_estimate_usd", dec),
            ("refused_estimate_nusd", pa.int64()), ("billed_failures", pa.int64()),
            ("prompt_tokens", pa.int64()), ("cached_tokens", pa.int64()),
            ("completion_tokens", pa.int64()), ("reasoning_tokens", pa.int64()), ("ttft_ms", pa.float64()),
            ("latency_ms", pa.float64()), ("streamed", pa.bool_()), ("partial", pa.bool_()),
            ("estimated", pa.bool_()), ("status", pa.string()), ("calls", pa.string()),
        ])
        cols = {f.name for f in schema}
        typed = []
        for r in rows:
            t = {k: v for k, v in r.items() if k in cols}
            t["ts"] = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")) if r.get("ts") else None
            for k, v in _decimal_money(r).items():
                if k in _MONEY:
                    t[k] = Decimal(v) if v is not None else None
            typed.append(t)
        table = pa.Table.from_pylist(typed, schema=schema)
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
    spend = {p: from_nusd(await redis.hget(rk.spend(tenant, scope), period_field(p)) or 0) for p in ("day", "month", "total")}
    spend_nusd = {p: int(_s(await redis.hget(rk.spend(tenant, scope), period_field(p)) or 0)) for p in ("day", "month", "total")}
    rows = await report(redis, tenant, since, "tier")
    return {"tenant": tenant, "key_id": key_id, "spend_usd": spend, "spend_nusd": spend_nusd, "budgets": budgets,
            "since": since, "by_tier": rows, "totals": totals(rows), **report_meta()}


async def measured_savings(redis: Redis, tenant: str | None, since: str | None = "7d",
                           top_tier: str | None = None) -> dict[str, Any]:
    """Shadow-run measurements next to the estimated figures (see accounting/evaluation.py)."""
    from .evaluation import eval_rows, measured  # noqa: PLC0415

    return measured(await eval_rows(redis, tenant, since), top_tier)
