"""Time windows and tenant listing shared by reports and evaluations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis

from . import redis_keys as rk


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


MAX_SINCE_DAYS = 3660  # ten years of day buckets; further back is a typo, not a report


def parse_since(since: str | None, now: datetime | None = None) -> datetime:
    """'7d', '24h', '30m' or an ISO date/time; default 7 days."""
    now = now or datetime.now(timezone.utc)
    if not since:
        return now - timedelta(days=7)
    bad = f"since must be like 7d, 24h, 30m or an ISO date within the last {MAX_SINCE_DAYS} days"
    m = re.fullmatch(r"\s*(\d{1,9})\s*([dhm])\s*", since)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"d": timedelta(days=n), "h": timedelta(hours=n), "m": timedelta(minutes=n)}[unit] \
            if n <= MAX_SINCE_DAYS * 24 * 60 else None
        if delta is None or delta > timedelta(days=MAX_SINCE_DAYS):
            raise ValueError(bad)
        return now - delta
    try:
        dt = datetime.fromisoformat(since)
    except ValueError:
        raise ValueError(bad) from None
    dt = dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    if now - dt > timedelta(days=MAX_SINCE_DAYS):
        raise ValueError(bad)
    return dt


async def tenants(redis: Redis) -> list[str]:
    names = {_s(t) for t in await redis.smembers(rk.tenants_index())}
    async for k in redis.scan_iter(match=rk.ledger_pattern(), count=500):  # every master, on Cluster
        names.add(rk.tenant_of_key(_s(k)))
    return sorted(names)
