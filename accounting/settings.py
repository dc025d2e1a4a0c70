"""Accountant settings and the small helpers its modules share (script text, day buckets, field values)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from pydantic import BaseModel


class AccountingSettings(BaseModel):
    fail_open: bool = False  # admission when Redis is unreachable: refuse (503) unless this is set
    # Generous: on a loaded 2-core host our own event loop is slow to read replies, and a Redis that
    # stalls for a second or two (fork for a snapshot, a busy neighbour) is slow, not down. Only an
    # unreachable Redis should fail requests, and that shows as a refused or timed-out connect.
    redis_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    # A connection that fails (stale after a Redis restart, reset by a proxy) is reconnected and the
    # command sent again this many times before it counts as a failure. Every script is idempotent.
    connection_retries: int = 1
    # Idle pooled connections are PINGed before reuse after this long, so a dead one is found first.
    health_check_interval_s: float = 10.0
    # A blocking pool: a burst waits briefly for a connection instead of failing (redis-py's plain pool
    # raises when exhausted, which would trip the breaker on load alone) or opening a connect storm.
    max_connections: int = 512  # a burst should wait on Redis, not on our own pool
    pool_wait_s: float = 5.0
    # A refusal caused only by other requests' holds waits this long for them to settle before it is
    # returned (then as retryable: 429 with retry-after and x-should-retry: true).
    hold_wait_s: float = 1.0
    lease_ttl_s: float = 900.0  # a crashed worker's hold returns to the budget after this
    auth_cache_ttl_s: float = 5.0
    # Every worker polls a version counter bumped by revocations and tenant-setting changes, and drops
    # its cached principals when it moves: a revoked key stops working everywhere within about this long.
    auth_sync_interval_s: float = 0.25
    ledger_retention_days: int = 90
    ledger_maxlen: int | None = None  # if set, trim streams by length instead of age
    idempotency_days: int = 30  # how long a settled request id is remembered (spool replay window)
    spool_dir: str | None = None  # default: <TRIAGE_STATE_DIR or .triage>/spool
    counterfactual_model: str | None = None  # price-book name of the top tier's model
    # Replication is asynchronous: a settle the master acknowledged in its last moments may never
    # reach the replica that a failover promotes. Settles acknowledged this recently are kept in
    # memory and, at the first failure after a success, put in the spool, whose idempotent replay
    # re-applies only those the new master lacks. 0 disables it.
    replication_guard_s: float = 5.0
    # Consecutive failures (after retries) that open the breaker; while open, requests wait for one
    # shared PING instead of each timing out, and the first PING that answers closes it again.
    breaker_threshold: int = 5


def lua(name: str) -> str:
    return resources.files("accounting").joinpath("lua", name).read_text()


_BUCKETS = tuple(f"{b / 10:.1f}" for b in range(10))


def complexity_bucket(c: float | None) -> str:
    if c is None:
        return "na"
    return _BUCKETS[min(9, max(0, int(c * 10)))]


_days: dict[int, tuple[str, str]] = {}


def day_month(ts: float) -> tuple[str, str]:
    """UTC day and month bucket names of a unix time; each day is formatted once, not per request."""
    d = int(ts // 86400)
    if (d + 1) * 86400 - ts < 1e-6:  # within datetime's microsecond rounding of midnight: its own answer
        at = datetime.fromtimestamp(ts, timezone.utc)
        return at.strftime("%Y-%m-%d"), at.strftime("%Y-%m")
    names = _days.get(d)
    if names is None:
        at = datetime.fromtimestamp(d * 86400, timezone.utc)
        names = (at.strftime("%Y-%m-%d"), at.strftime("%Y-%m"))
        if len(_days) > 1000:
            _days.clear()
        _days[d] = names
    return names


def today(now: datetime | None = None) -> tuple[str, str]:
    """UTC day and month bucket names of ``now`` (default: this moment)."""
    if now is None:
        return day_month(time.time())
    return now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")


def as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def clean(v: str | None) -> str:
    """A rollup field part: no separator inside, never empty."""
    return (v or "-").replace("|", "/")
