"""API-key authentication for the hot path: an in-process cache in front of the key store, cleared
when any worker changes a key (the store's version counter), served stale while Redis is away."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .models import AccountingUnavailable, Principal

if TYPE_CHECKING:
    from .breaker import CircuitBreaker
    from .keys import KeyStore
    from .settings import AccountingSettings


class AuthMixin:
    """Part of `Accountant` (accounting/accountant.py), split out to keep modules small."""

    settings: AccountingSettings
    keys: KeyStore
    breaker: CircuitBreaker
    _auth_cache: dict[str, tuple[float, Principal | None]]
    _keys_watch: asyncio.Task[None] | None
    _bg: set[asyncio.Task[Any]]

    async def _probe(self) -> bool:
        raise NotImplementedError

    def _watch_key_changes(self) -> None:
        t = self._keys_watch
        if t is None or t.done():
            t = self._keys_watch = asyncio.get_running_loop().create_task(self._poll_key_changes())
            self._bg.add(t)
            t.add_done_callback(self._bg.discard)

    async def _poll_key_changes(self) -> None:
        seen: int | None = None
        while True:
            if self.breaker.allow():
                try:
                    async with asyncio.timeout(self.settings.redis_timeout_s):
                        v = await self.keys.version()
                    if v != seen:
                        if seen is not None:
                            self._auth_cache.clear()
                        seen = v
                except (RedisError, OSError, TimeoutError):
                    pass
            await asyncio.sleep(self.settings.auth_sync_interval_s)

    async def authenticate(self, api_key: str) -> Principal | None:
        self._watch_key_changes()
        h = hashlib.sha256(api_key.encode()).hexdigest()
        now = time.monotonic()
        hit = self._auth_cache.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        if not self.breaker.allow():
            if hit is not None:
                return hit[1]  # stale beats refusing every client during an outage
            if not await self.breaker.usable(self._probe):
                raise AccountingUnavailable("accounting store unavailable (circuit open)")
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                p = await self.keys.lookup(api_key)
        except (RedisError, OSError, TimeoutError) as e:
            self.breaker.failure()
            if hit is not None:
                return hit[1]
            raise AccountingUnavailable("accounting store unavailable") from e
        self.breaker.success()
        if len(self._auth_cache) > 100_000:
            self._auth_cache.clear()
        # unknown keys are cached briefly too, so a flood of bad keys can't hammer Redis
        self._auth_cache[h] = (now + (self.settings.auth_cache_ttl_s if p else 1.0), p)
        return p

    def invalidate_auth_cache(self) -> None:
        self._auth_cache.clear()
