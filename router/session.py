"""Session stickiness: `x-triage-session` pins a conversation's tier for a TTL.

A multi-turn chat that bounces between a small and a large model reads as two
personalities; pinning the tier admitted on the first turn keeps it steady.

Two layers: `SessionPins` is a per-worker bounded LRU (a client minting a fresh
session id per request cannot grow it) that saves a round trip on repeat turns;
`shared_tier` / `pin_shared` keep the pin in Redis (key named in
accounting/redis_keys.py) so every worker honours it. A pin is a soft
preference: losing it only costs one re-classification, so Redis trouble is
swallowed here rather than failing the request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from accounting import redis_keys as rk

if TYPE_CHECKING:
    from accounting import Accountant

_now = time.monotonic


class SessionPins:
    __slots__ = ("_pins", "capacity")

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._pins: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, tenant: str, session: str | None) -> str | None:
        if not session:
            return None
        key = (tenant, session)
        hit = self._pins.get(key)
        if hit is None:
            return None
        tier, expires = hit
        if expires <= _now():
            del self._pins[key]
            return None
        return tier

    def pin(self, tenant: str, session: str | None, tier: str, ttl_s: float) -> None:
        """(Re)pin; each turn refreshes the TTL so an active conversation stays pinned."""
        if not session:
            return
        key = (tenant, session)
        pins = self._pins
        pins[key] = (tier, _now() + ttl_s)
        pins.move_to_end(key)
        while len(pins) > self.capacity:
            pins.popitem(last=False)

    def drop(self, tenant: str, session: str) -> None:
        self._pins.pop((tenant, session), None)

    def __len__(self) -> int:
        return len(self._pins)


async def shared_tier(acct: Accountant, tenant: str, session_id: str) -> str | None:
    """The tier this conversation is pinned to, shared by every worker; None when unknown or Redis is away."""
    if not acct.breaker.allow():
        return None
    try:
        async with asyncio.timeout(acct.settings.redis_timeout_s):
            v = await acct.redis.get(rk.session(tenant, session_id))
    except (RedisError, OSError, TimeoutError):
        return None
    return v.decode() if isinstance(v, bytes) else v


async def pin_shared(acct: Accountant, tenant: str, session_id: str, tier: str, ttl_s: float) -> None:
    """Best effort: a lost pin only means the next turn is routed afresh."""
    if not acct.breaker.allow():
        return
    try:
        async with asyncio.timeout(acct.settings.redis_timeout_s):
            await acct.redis.set(rk.session(tenant, session_id), tier, ex=max(1, int(ttl_s)))
    except (RedisError, OSError, TimeoutError):
        pass
