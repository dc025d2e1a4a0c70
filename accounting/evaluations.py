"""Shadow evaluations (their own ledger and spend, never the tenant's budgets) and the learned
top-tier answer lengths per complexity bucket."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from . import redis_keys as rk
from .models import NANO, LedgerRecord, to_nusd
from .settings import as_str as _s
from .settings import today as _today

if TYPE_CHECKING:
    from .breaker import CircuitBreaker
    from .prices import PriceBook
    from .settings import AccountingSettings

log = logging.getLogger("triage.accounting")


class EvaluationMixin:
    """Part of `Accountant` (accounting/accountant.py), split out to keep modules small."""

    settings: AccountingSettings
    prices: PriceBook
    redis: Any
    breaker: CircuitBreaker
    _lengths: dict[str, tuple[float, dict[str, dict[str, int]]]]

    def _trim(self, ts: float) -> tuple[str, str]:
        raise NotImplementedError

    def fresh_top_lengths(self, tenant: str, max_age_s: float = 30.0) -> dict[str, dict[str, int]] | None:
        """`top_lengths` when this worker's copy is fresh, without a coroutine (the per-request case)."""
        hit = self._lengths.get(tenant)
        if hit is not None and time.monotonic() - hit[0] < max_age_s:
            return hit[1]
        return None

    async def top_lengths(self, tenant: str, max_age_s: float = 30.0) -> dict[str, dict[str, int]]:
        """Per complexity bucket: the tenant's top-tier requests (``reqs``), their calls (``calls``) and
        those calls' completion (``ct``) and prompt (``pt``) tokens, learned at settle; cached per tenant
        for ``max_age_s`` (and dropped when this worker settles a top-tier request)."""
        fresh = self.fresh_top_lengths(tenant, max_age_s)
        if fresh is not None:
            return fresh
        _, cached = self._lengths.get(tenant, (0.0, {}))
        now = time.monotonic()
        if not self.breaker.allow():
            return cached
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                raw = await self.redis.hgetall(rk.top_lengths(tenant))
        except (RedisError, OSError, TimeoutError):
            return cached
        out: dict[str, dict[str, int]] = {}
        for k, v in raw.items():
            b, _, metric = _s(k).rpartition("|")
            out.setdefault(b, {})[metric] = int(_s(v))
        if len(self._lengths) > 10_000:
            self._lengths.clear()
        self._lengths[tenant] = (now, out)
        return out

    async def record_evaluation(self, record: LedgerRecord) -> bool:
        """Book a shadow run: its own ledger stream and the tenant's evaluation spend, never the
        tenant's request spend or budgets. Idempotent per request id."""
        record.kind = "evaluation"
        for c in record.calls:
            if c.cost_nusd is None:
                c.cost_nusd = to_nusd(c.cost_usd) if c.cost_usd else (
                    to_nusd(self.prices.cost(c.model, c.usage(), c.service_tier)) if c.model in self.prices else 0)
            c.cost_usd = c.cost_nusd / NANO
        record.cost_nusd = sum(c.cost_nusd or 0 for c in record.calls)
        record.cost_usd = record.cost_nusd / NANO
        record.prompt = None
        if record.ts is None:
            record.ts = time.time()
        day, month = _today(datetime.fromtimestamp(record.ts, timezone.utc))
        trim_kind, trim_arg = self._trim(record.ts)
        sc = rk.scope_eval(record.tenant)
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                if not await self.redis.set(rk.done(record.tenant, record.request_id), "1", nx=True,
                                            ex=self.settings.idempotency_days * 86400):
                    return False
                async with self.redis.pipeline(transaction=True) as p:
                    p.xadd(rk.evals(record.tenant), {"rid": record.request_id, "d": record.to_json()},
                           **({"maxlen": int(trim_arg)} if trim_kind == "MAXLEN" else {"minid": trim_arg}),
                           approximate=True)
                    for f in (f"d:{day}", f"m:{month}", "t"):
                        p.hincrby(rk.spend(record.tenant, sc), f, record.cost_nusd)
                    await p.execute()
        except (RedisError, OSError, TimeoutError):
            log.warning("evaluation %s not ledgered: accounting store unavailable", record.request_id)
            return False
        return True

    async def eval_spend_nusd(self, tenant: str) -> int:
        """This month's evaluation (shadow) spend of a tenant."""
        _, month = _today()
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                v = await self.redis.hget(rk.spend(tenant, rk.scope_eval(tenant)), f"m:{month}")
        except (RedisError, OSError, TimeoutError):
            return 1 << 62  # unknown: treat as spent, shadowing is optional
        return int(_s(v)) if v is not None else 0
