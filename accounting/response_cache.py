"""Exact-match response cache with single flight, per tenant, in Redis.

An entry is keyed by a digest of everything that shapes the answer (the
caller computes it: model, messages, tools, response format, temperature,
seed, ...), inside the tenant's own keys, so nothing crosses tenants. Only
successful answers are stored. Single flight: the first request for a digest
takes a short lock and computes; concurrent identical requests, on any
worker, wait for its entry instead of calling upstream; if the owner fails,
its lock goes and a waiter computes instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import redis_keys as rk

_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[4])
redis.call('DEL', KEYS[3])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, d in ipairs(old) do redis.call('DEL', ARGV[6] .. d) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ResponseCache:
    def __init__(self, redis: Any, ttl_s: int = 3600, max_entries: int = 10_000, max_entry_bytes: int = 256 * 1024,
                 lock_ttl_s: float = 60.0, poll_s: float = 0.02):
        self.redis = redis
        self.ttl_s = int(ttl_s)
        self.max_entries = int(max_entries)
        self.max_entry_bytes = int(max_entry_bytes)
        self.lock_ttl_ms = int(lock_ttl_s * 1000)
        self.poll_s = poll_s
        self._store = redis.register_script(_STORE)
        self._unlock = redis.register_script(_UNLOCK)

    async def get(self, tenant: str, digest: str) -> bytes | None:
        return await self.redis.get(rk.cache_entry(tenant, digest))

    async def lead(self, tenant: str, digest: str, owner: str) -> bool:
        """True: this request computes the answer (it holds the single-flight lock)."""
        return bool(await self.redis.set(rk.cache_lock(tenant, digest), owner, nx=True, px=self.lock_ttl_ms))

    async def wait(self, tenant: str, digest: str, timeout_s: float) -> bytes | None:
        """The leader's answer once stored; None when the leader gave up (its lock is gone) or on timeout."""
        deadline = time.monotonic() + timeout_s
        entry, lock = rk.cache_entry(tenant, digest), rk.cache_lock(tenant, digest)
        while time.monotonic() < deadline:
            async with self.redis.pipeline(transaction=False) as p:
                p.get(entry)
                p.exists(lock)
                val, locked = await p.execute()
            if val is not None:
                return val
            if not locked:
                return None
            await asyncio.sleep(self.poll_s)
        return None

    async def store(self, tenant: str, digest: str, value: bytes) -> bool:
        """Keep a successful answer (if it is not too large) and end the single flight."""
        if len(value) > self.max_entry_bytes:
            await self.release(tenant, digest, None)
            return False
        await self._store(keys=[rk.cache_entry(tenant, digest), rk.cache_index(tenant), rk.cache_lock(tenant, digest)],
                          args=[value, self.ttl_s, f"{time.time():.3f}", digest, self.max_entries,
                                rk.cache_entry(tenant, "")])
        return True

    async def release(self, tenant: str, digest: str, owner: str | None) -> None:
        """The leader failed or its answer is not cacheable: let a waiter compute instead."""
        if owner is None:
            await self.redis.delete(rk.cache_lock(tenant, digest))
        else:
            await self._unlock(keys=[rk.cache_lock(tenant, digest)], args=[owner])
