"""Deployment cooldowns: a failing provider is skipped by later requests instead of paid for in latency."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.upstream.deployment import Deployment

COOLDOWN_BASE_S = 5.0
COOLDOWN_MAX_S = 60.0
_now = time.monotonic


class Cooldowns:
    """Process-wide: deployment -> when it may be tried first again."""

    __slots__ = ("_until", "_fails")

    def __init__(self) -> None:
        self._until: dict[tuple[str, str, str], float] = {}
        self._fails: dict[tuple[str, str, str], int] = {}

    @staticmethod
    def key(dep: Deployment) -> tuple[str, str, str]:
        return (dep.name, dep.api_base or "", dep.model)

    def cooling(self, dep: Deployment) -> bool:
        if not self._until:  # the usual case: nothing is cooling, so no key to build
            return False
        until = self._until.get(self.key(dep))
        return until is not None and until > _now()

    def failed(self, dep: Deployment, retry_after: float | None) -> None:
        k = self.key(dep)
        n = self._fails.get(k, 0) + 1
        self._fails[k] = n
        span = min(max(retry_after or 0.0, COOLDOWN_BASE_S * 2 ** (n - 1)), COOLDOWN_MAX_S)
        self._until[k] = _now() + span

    def succeeded(self, dep: Deployment) -> None:
        if not self._fails:
            return
        k = self.key(dep)
        if k in self._fails:
            del self._fails[k]
            self._until.pop(k, None)

    def reset(self) -> None:
        self._until.clear()
        self._fails.clear()


COOLDOWNS = Cooldowns()
