"""Budget policies: one per scope, read by the admit script on every request."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from redis.asyncio import Redis

from . import redis_keys as rk
from .models import BudgetPolicy, from_nusd, to_nusd

_SCOPE_RE = re.compile(r"^(tenant|key):[^:\s]+(:(tier|model):[^\s]+)?$")


def validate_scope(scope: str) -> str:
    if not _SCOPE_RE.match(scope):
        raise ValueError(
            f"bad scope {scope!r}: expected tenant:<name> or key:<key_id>, optionally followed by "
            ":tier:<tier> or :model:<model>"
        )
    return scope


def build_scope(scope: str | None, tenant: str | None, key_id: str | None, tier: str | None, model: str | None) -> str:
    """An explicit scope string, or one assembled from tenant/key + optional tier/model."""
    if scope:
        return validate_scope(scope)
    if bool(tenant) == bool(key_id):
        raise ValueError("give exactly one of tenant or key_id (or a full scope)")
    if tier and model:
        raise ValueError("a scope narrows by tier or by model, not both")
    s = f"tenant:{tenant}" if tenant else f"key:{key_id}"
    if tier:
        s += f":tier:{tier}"
    if model:
        s += f":model:{model}"
    return validate_scope(s)


def period_field(period: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    if period == "day":
        return "d:" + now.strftime("%Y-%m-%d")
    if period == "month":
        return "m:" + now.strftime("%Y-%m")
    return "t"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class BudgetStore:
    def __init__(self, redis: Redis):
        self.r = redis

    async def set(self, policy: BudgetPolicy) -> BudgetPolicy:
        validate_scope(policy.scope)
        if policy.limit_usd < 0:
            raise ValueError("limit_usd must be >= 0")
        if policy.soft_pct is not None and not (0 < policy.soft_pct <= 100):
            raise ValueError("soft_pct must be in (0, 100]")
        fields = {
            "limit": str(to_nusd(policy.limit_usd)),
            "period": policy.period,
            "mode": policy.mode,
            "soft_pct": "" if policy.soft_pct is None else repr(float(policy.soft_pct)),
        }
        async with self.r.pipeline(transaction=True) as p:
            p.delete(rk.budget(policy.scope))
            p.hset(rk.budget(policy.scope), mapping=fields)
            p.sadd(rk.budgets_index(), policy.scope)
            p.incr(rk.budgets_version())
            await p.execute()
        return policy

    async def delete(self, scope: str) -> bool:
        async with self.r.pipeline(transaction=True) as p:
            p.delete(rk.budget(scope))
            p.srem(rk.budgets_index(), scope)
            p.incr(rk.budgets_version())
            n, _, _ = await p.execute()
        return bool(n)

    async def get(self, scope: str) -> BudgetPolicy | None:
        h = {_s(k): _s(v) for k, v in (await self.r.hgetall(rk.budget(scope))).items()}
        if not h:
            return None
        return BudgetPolicy(
            scope=scope,
            limit_usd=from_nusd(h["limit"]),
            period=h.get("period", "month"),  # type: ignore[arg-type]
            mode=h.get("mode", "hard"),  # type: ignore[arg-type]
            soft_pct=float(h["soft_pct"]) if h.get("soft_pct") else None,
        )

    async def show(self, prefix: str | None = None) -> list[dict[str, Any]]:
        """Every policy (optionally those whose scope starts with ``prefix``) with its live spend."""
        scopes = sorted(_s(s) for s in await self.r.smembers(rk.budgets_index()))
        if prefix:
            scopes = [s for s in scopes if s == prefix or s.startswith(prefix + ":")]
        out = []
        for scope in scopes:
            pol = await self.get(scope)
            if pol is None:
                continue
            out.append(await self.status(pol))
        return out

    async def status(self, pol: BudgetPolicy) -> dict[str, Any]:
        spent_raw, reserved_raw = await self.r.hmget(rk.spend(pol.scope), period_field(pol.period), "reserved")
        spent, reserved = from_nusd(spent_raw or 0), max(0.0, from_nusd(reserved_raw or 0))
        return {
            **pol.model_dump(),
            "spent_usd": spent,
            "reserved_usd": reserved,
            "remaining_usd": max(0.0, pol.limit_usd - spent - reserved),
        }

    async def snapshot(self) -> tuple[int, frozenset[str]]:
        """(version, scopes with a policy), read atomically; workers cache this between changes."""
        async with self.r.pipeline(transaction=True) as p:
            p.get(rk.budgets_version())
            p.smembers(rk.budgets_index())
            ver, members = await p.execute()
        return int(ver or 0), frozenset(_s(m) for m in members)

    async def spent(self, scope: str, period: str = "total") -> float:
        return from_nusd(await self.r.hget(rk.spend(scope), period_field(period)) or 0)
