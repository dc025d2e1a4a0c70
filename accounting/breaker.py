"""A circuit breaker that tells a dead Redis from a slow one.

After ``threshold`` consecutive failures (connection errors that survived one
reconnect-and-retry, or commands past the generous timeout) the breaker opens.
While open, callers do not send commands on the pool; they wait for a health
probe (one PING shared by everyone who arrived before it started) and go on
only if it answers. So an unreachable Redis costs one probe, not one timeout
per request, and a Redis that is back is used by the very next request: no
cooldown window keeps refusing once it answers again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


class CircuitBreaker:
    def __init__(self, threshold: int = 5, clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, threshold)
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._probe: asyncio.Task[bool] | None = None
        self._probe_started = float("-inf")

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"

    def allow(self) -> bool:
        """True when closed: commands go straight to Redis."""
        return self.opened_at is None

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold and self.opened_at is None:
            self.opened_at = self._clock()

    async def usable(self, probe: Callable[[], Awaitable[bool]]) -> bool:
        """True at once when closed; when open, whether a probe started after this call succeeds.

        Concurrent callers share one probe; a caller that arrives while a probe is in flight waits for
        the next one, so nobody is refused on the strength of an answer older than its own request.
        """
        arrived = self._clock()
        while True:
            if self.opened_at is None:
                return True
            task = self._probe
            if task is not None and self._probe_started >= arrived:
                return await asyncio.shield(task)
            if task is not None and not task.done():
                try:
                    await asyncio.shield(task)
                except Exception:  # noqa: BLE001 - the probe's own failure is handled by its caller
                    pass
                continue
            self._probe_started = self._clock()
            self._probe = asyncio.get_running_loop().create_task(self._run(probe))

    async def _run(self, probe: Callable[[], Awaitable[bool]]) -> bool:
        try:
            ok = await probe()
        except Exception:  # noqa: BLE001 - any failure of the probe means "not usable yet"
            ok = False
        if ok:
            self.success()
        return ok
