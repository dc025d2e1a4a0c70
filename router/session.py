"""Session stickiness: `x-triage-session` pins a conversation's tier for a TTL.

A multi-turn chat that bounces between a small and a large model reads as two
personalities; pinning the tier admitted on the first turn keeps it steady.

In-process on purpose: accounting/redis_keys.py has no session-pin key, and a
pin is a soft preference (losing it on restart or across workers only costs
one re-classification), so it is not worth a Redis round trip per request.
Bounded LRU so a client minting a fresh session id per request cannot grow it.
"""

from __future__ import annotations

import time
from collections import OrderedDict

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
