"""Budget policies: one per scope, read by the admit script on every request."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from . import redis_keys as rk
from .models import BudgetPolicy, from_nusd, to_nusd
from .names import check_key_id, check_tenant, check_usd

_SCOPE_RE = re.compile(r"^(tenant|key):[^:\s]+(:(tier|model):[^\s]+)?$")


def validate_scope(scope: str) -> str:
    m = _SCOPE_RE.match(scope) if isinstance(scope, str) else None
    if not m:
        raise ValueError(
            f"bad scope {str(scope)[:80]!r}: expected tenant:<name> or key:<key_id>, optionally followed by "
            ":tier:<tier> or :model:<model>"
        )
    kind, name = scope.split(":", 2)[:2]
    check_tenant(name) if kind == "tenant" else check_key_id(name)
    return scope


def scope_parts(scope: str) -> tuple[str, str, str | None, str | None]:
    """(kind, name, tier, model) of a validated scope."""
    kind, name, *rest = scope.split(":", 3)
    tier = rest[1] if rest and rest[0] == "tier" else None
    model = rest[1] if rest and rest[0] == "model" else None
    return kind, name, tier, model


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


def check_policy(policy: BudgetPolicy) -> BudgetPolicy:
    """Everything about a policy that can be checked without Redis; callers check before writing anything."""
    validate_scope(policy.scope)
    check_usd(policy.limit_usd, "limit_usd")
    if policy.period not in ("day", "month", "total"):
        raise ValueError("period must be day, month or total")
    if policy.soft_pct is not None and not (0 < policy.soft_pct <= 100):
        raise ValueError("soft_pct must be in (0, 100]")
    return policy


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
    """Policies live in their tenant's hash slot (a key scope in its key's tenant), next to the
    spend and holds the admit script reads, so one script never spans Cluster slots."""

    def __init__(self, redis: Any):
        self.r = redis
        self._script = redis.register_script(
            resources.files("accounting").joinpath("lua", "policy.lua").read_text())
        self._key_tenants: dict[str, str] = {}

    async def tenant_of(self, scope: str) -> str:
        """The tenant whose slot holds ``scope``; ValueError for a key that does not exist."""
        t = rk.scope_tenant_name(scope)
        if t is not None:
            return t
        kid = scope.split(":", 2)[1]
        hit = self._key_tenants.get(kid)
        if hit is not None:
            return hit
        sha = await self.r.get(rk.key_id(kid))
        owner = await self.r.hget(rk.apikey(_s(sha)), "tenant") if sha else None
        if owner is None:
            raise ValueError(f"no key {kid!r}: a key scope needs an existing key")
        self._key_tenants[kid] = _s(owner)
        return _s(owner)

    async def set(self, policy: BudgetPolicy, tenant: str | None = None) -> BudgetPolicy:
        check_policy(policy)
        t = tenant or await self.tenant_of(policy.scope)
        soft = "" if policy.soft_pct is None else repr(float(policy.soft_pct))
        await self.r.sadd(rk.tenants_index(), t)
        await self._script(keys=[rk.budget(t, policy.scope), rk.budgets_index(t), rk.budgets_version(t)],
                           args=["set", policy.scope, str(to_nusd(policy.limit_usd)), policy.period, policy.mode, soft])
        return policy

    async def delete(self, scope: str) -> bool:
        try:
            t = await self.tenant_of(scope)
        except ValueError:
            return False
        n = await self._script(keys=[rk.budget(t, scope), rk.budgets_index(t), rk.budgets_version(t)],
                               args=["del", scope])
        return bool(n)

    async def get(self, scope: str, tenant: str | None = None) -> BudgetPolicy | None:
        try:
            t = tenant or await self.tenant_of(scope)
        except ValueError:
            return None
        h = {_s(k): _s(v) for k, v in (await self.r.hgetall(rk.budget(t, scope))).items()}
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
        """Every policy (optionally those whose scope starts with ``prefix``) with its live spend.

        Read per tenant and merged here: no single command spans the tenants' slots."""
        if prefix:
            try:
                tenants = [await self.tenant_of(prefix)]
            except ValueError:
                return []
        else:
            tenants = sorted(_s(t) for t in await self.r.smembers(rk.tenants_index()))
        out = []
        for t in tenants:
            scopes = sorted(_s(s) for s in await self.r.smembers(rk.budgets_index(t)))
            if prefix:
                scopes = [s for s in scopes if s == prefix or s.startswith(prefix + ":")]
            for scope in scopes:
                pol = await self.get(scope, t)
                if pol is not None:
                    out.append(await self.status(pol, t))
        return out

    async def status(self, pol: BudgetPolicy, tenant: str | None = None) -> dict[str, Any]:
        t = tenant or await self.tenant_of(pol.scope)
        spent_raw, reserved_raw = await self.r.hmget(rk.spend(t, pol.scope), period_field(pol.period), "reserved")
        spent, reserved = from_nusd(spent_raw or 0), max(0.0, from_nusd(reserved_raw or 0))
        return {
            **pol.model_dump(),
            "spent_usd": spent,
            "reserved_usd": reserved,
            "remaining_usd": max(0.0, pol.limit_usd - spent - reserved),
        }

    async def snapshot(self, tenant: str) -> tuple[int, frozenset[str]]:
        """(version, scopes with a policy) of one tenant; workers cache this between changes.

        Version first, then the set: if a change lands in between, the cached version is the older
        one, so the next admission's check fails and refreshes. Never a new version with old scopes."""
        ver = await self.r.get(rk.budgets_version(tenant))
        members = await self.r.smembers(rk.budgets_index(tenant))
        return int(ver or 0), frozenset(_s(m) for m in members)

    async def spent(self, scope: str, period: str = "total") -> float:
        t = await self.tenant_of(scope)
        return from_nusd(await self.r.hget(rk.spend(t, scope), period_field(period)) or 0)
