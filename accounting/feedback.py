"""Quality feedback on a settled request: who owns it, and recording a rating in its ledger row and rollups."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from . import redis_keys as rk
from .ids import is_request_id
from .models import AccountingUnavailable, Principal, TenantMismatch
from .settings import as_str as _s

if TYPE_CHECKING:
    pass

log = logging.getLogger("triage.accounting")


class FeedbackMixin:
    """Part of `Accountant` (accounting/accountant.py), split out to keep modules small."""

    redis: Any
    _feedback: Any

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        raise NotImplementedError

    async def owner_of(self, request_id: str) -> str | None:
        """The tenant whose ledger holds ``request_id`` (master-key feedback); O(tenants), admin-only."""
        try:
            names = sorted(_s(t) for t in await self.redis.smembers(rk.tenants_index()))
            async with self.redis.pipeline(transaction=False) as p:
                for t in names:
                    p.exists(rk.request(t, request_id))
                hits = await p.execute()
        except (RedisError, OSError) as e:
            raise AccountingUnavailable("accounting store unavailable") from e
        return next((t for t, h in zip(names, hits) if h), None)

    async def feedback(self, principal: Principal | str, request_id: str, score: float | None = None,
                       comment: str | None = None, thumbs: str | None = None) -> bool:
        """Rate a request of the caller's own tenant. False if unknown; TenantMismatch if another's."""
        tenant = principal if isinstance(principal, str) else principal.tenant
        if score is None:
            if thumbs not in ("up", "down"):
                raise ValueError("give score in [0, 1] or thumbs up/down")
            score = 1.0 if thumbs == "up" else 0.0
        if not (0.0 <= score <= 1.0):
            raise ValueError("score must be in [0, 1]")
        if not is_request_id(request_id):
            return False  # not an id we minted, so no record of ours: never build a key from it
        try:
            owner, day = await self.redis.hmget(rk.request(tenant, request_id), "tenant", "day")
        except (RedisError, OSError) as e:
            raise AccountingUnavailable("accounting store unavailable") from e
        if owner is None:
            return False
        if _s(owner) != tenant:
            raise TenantMismatch("request belongs to another tenant")
        res = await self._call(
            self._feedback,
            [rk.request(tenant, request_id), rk.rollup(tenant, _s(day))],
            [tenant, int(round(score * 1_000_000)), (comment or "")[:2000]],
        )
        if int(res) == -2:
            raise TenantMismatch("request belongs to another tenant")
        return int(res) == 1
