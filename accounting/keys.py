"""Virtual API keys and tenant settings, stored hashed in Redis.

Only the SHA-256 of a key is stored; the plaintext is shown once, at creation.
SHA-256 (not a slow KDF) is right here: keys are 32 random bytes, so there is
nothing to brute-force, and authentication sits on the hot path.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone
from typing import Any

from . import redis_keys as rk
from .models import BudgetPolicy, KeyInfo, Principal, from_nusd, to_nusd
from .names import check_tenant, check_usd

KEY_PREFIX = "sk-triage-"


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _s(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _f(v: Any) -> float | None:
    s = _s(v)
    return float(s) if s not in (None, "") else None


def _decode(h: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in h.items()}  # type: ignore[misc]


class KeyStore:
    def __init__(self, redis: Any):
        self.r = redis

    async def create(
        self,
        tenant: str,
        label: str | None = None,
        budget_usd: float | None = None,
        period: str = "month",
        max_cost_per_query: float | None = None,
    ) -> tuple[str, KeyInfo]:
        # Everything is checked before the first write: a refused key leaves nothing behind.
        check_tenant(tenant)
        if max_cost_per_query is not None:
            check_usd(max_cost_per_query, "max_cost_per_query")
        policy = None
        if budget_usd is not None:
            from .budgets import check_policy  # noqa: PLC0415 - avoid a cycle at import

            policy = check_policy(BudgetPolicy(scope=rk.scope_key("k_" + "0" * 16), limit_usd=check_usd(
                budget_usd, "budget_usd"), period=period))  # type: ignore[arg-type]  # the model validates it
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        sha = hash_key(plaintext)
        kid = "k_" + secrets.token_hex(8)
        info = KeyInfo(
            key_id=kid,
            tenant=tenant,
            label=label,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            max_cost_per_query=max_cost_per_query,
            prefix=plaintext[: len(KEY_PREFIX) + 4],
        )
        fields = {
            "key_id": kid,
            "tenant": tenant,
            "label": label or "",
            "created_at": info.created_at,
            "revoked": "0",
            "max_cost_per_query": "" if max_cost_per_query is None else repr(float(max_cost_per_query)),
            "prefix": info.prefix,
        }
        # Separate keys in separate Cluster slots, so no MULTI: the index entries go first and the
        # hash that makes the key usable goes last, so a crash in between leaves no live, unlisted key.
        async with self.r.pipeline(transaction=False) as p:
            p.set(rk.key_id(kid), sha)
            p.sadd(rk.keys_index(), kid)
            p.sadd(rk.tenants_index(), tenant)
            await p.execute()
        if policy is not None:
            from .budgets import BudgetStore  # noqa: PLC0415 - avoid a cycle at import

            await BudgetStore(self.r).set(policy.model_copy(update={"scope": rk.scope_key(kid)}), tenant=tenant)
        await self.r.hset(rk.apikey(sha), mapping=fields)
        return plaintext, info

    async def get(self, key_id: str) -> KeyInfo | None:
        sha = _s(await self.r.get(rk.key_id(key_id)))
        if not sha:
            return None
        h = _decode(await self.r.hgetall(rk.apikey(sha)))
        return _info(h) if h else None

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        kids = sorted(str(_s(k)) for k in await self.r.smembers(rk.keys_index()))
        if not kids:
            return []
        async with self.r.pipeline(transaction=False) as p:  # not MGET: the keys span Cluster slots
            for k in kids:
                p.get(rk.key_id(k))
            shas = await p.execute()
        async with self.r.pipeline(transaction=False) as p:
            for sha in shas:
                p.hgetall(rk.apikey(_s(sha) or "-"))
            rows = await p.execute()
        out = [_info(_decode(h)) for h in rows if h]
        return [i for i in out if tenant is None or i.tenant == tenant]

    async def revoke(self, key_id: str) -> bool:
        sha = _s(await self.r.get(rk.key_id(key_id)))
        if not sha or not await self.r.exists(rk.apikey(sha)):
            return False
        await self.r.hset(rk.apikey(sha), "revoked", "1")
        await self.r.incr(rk.keys_version())  # every worker drops its cached principals on the next poll
        return True

    async def version(self) -> int:
        return int(await self.r.get(rk.keys_version()) or 0)

    async def tenant_exists(self, tenant: str) -> bool:
        return bool(await self.r.sismember(rk.tenants_index(), tenant))

    async def lookup(self, plaintext: str) -> Principal | None:
        """Two round trips (key, then its tenant); callers cache the result briefly."""
        if not plaintext.startswith(KEY_PREFIX):
            return None
        h = _decode(await self.r.hgetall(rk.apikey(hash_key(plaintext))))
        if not h or h.get("revoked") == "1":
            return None
        t = _decode(await self.r.hgetall(rk.tenant(h["tenant"])))
        cap = _f(h.get("max_cost_per_query"))
        if cap is None:
            cap = _f(t.get("max_cost_per_query"))
        return Principal(
            key_id=h["key_id"],
            tenant=h["tenant"],
            label=h.get("label") or None,
            max_cost_per_query=cap,
            store_prompts=t.get("store_prompts") == "1",
        )

    async def set_tenant(
        self, tenant: str, *, store_prompts: bool | None = None, max_cost_per_query: float | None = None,
        clear_max_cost: bool = False,
    ) -> dict[str, Any]:
        fields: dict[str, str] = {}
        if store_prompts is not None:
            fields["store_prompts"] = "1" if store_prompts else "0"
        if max_cost_per_query is not None:
            fields["max_cost_per_query"] = repr(float(max_cost_per_query))
        if clear_max_cost:
            fields["max_cost_per_query"] = ""
        if fields:
            await self.r.hset(rk.tenant(tenant), mapping=fields)
            await self.r.sadd(rk.tenants_index(), tenant)
            await self.r.incr(rk.keys_version())  # cached principals carry these settings
        return await self.get_tenant(tenant)

    async def get_tenant(self, tenant: str) -> dict[str, Any]:
        t = _decode(await self.r.hgetall(rk.tenant(tenant)))
        return {
            "tenant": tenant,
            "store_prompts": t.get("store_prompts") == "1",
            "max_cost_per_query": _f(t.get("max_cost_per_query")),
        }


def _info(h: dict[str, str]) -> KeyInfo:
    return KeyInfo(
        key_id=h["key_id"],
        tenant=h["tenant"],
        label=h.get("label") or None,
        created_at=h.get("created_at", ""),
        revoked=h.get("revoked") == "1",
        max_cost_per_query=_f(h.get("max_cost_per_query")),
        prefix=h.get("prefix", ""),
    )


__all__ = ["KeyStore", "KeyInfo", "hash_key", "KEY_PREFIX", "to_nusd", "from_nusd"]
