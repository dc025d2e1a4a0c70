"""Time windows and tenant listing shared by reports and evaluations."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis

from . import redis_keys as rk


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


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


async def tenants(redis: Redis) -> list[str]:
    names = {_s(t) for t in await redis.smembers(rk.tenants_index())}
    async for k in redis.scan_iter(match=rk.ledger_pattern(), count=500):  # every master, on Cluster
        names.add(rk.tenant_of_key(_s(k)))
    return sorted(names)
