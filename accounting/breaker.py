"""A small circuit breaker so a dead Redis costs one timeout, not one per request.

After ``threshold`` consecutive failures the breaker opens for ``cooldown`` seconds:
calls fail fast (the caller fails open or closed by policy, and spools ledger
records). After the cooldown one trial call is let through (half-open); success
closes the breaker.
"""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, threshold: int = 3, cooldown: float = 2.0, clock=time.monotonic):
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        now = self._clock()
        if now - self.opened_at < self.cooldown:
            return False
        # half-open: one trial per cooldown window; others keep failing fast meanwhile
        if self._trial_at is None or now - self._trial_at >= self.cooldown:
            self._trial_at = now
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self._clock()
            self._trial_at = None
