"""The facade the router calls: authenticate, admit, settle, release, feedback.

Hot path cost: ``authenticate`` is served from an in-process cache (a few
seconds), ``admit`` is one EVALSHA, ``settle`` is one EVALSHA. Every Redis
call is bounded by a short timeout and guarded by a circuit breaker; settle
never raises to the client — what Redis can't take goes to the local spool and
is replayed, idempotently, once Redis answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from pydantic import BaseModel
from redis.exceptions import RedisError

from . import redis_keys as rk
from .breaker import CircuitBreaker
from .ids import is_request_id
from .budgets import BudgetStore
from .keys import KeyStore
from .models import (
    Admission,
    AccountingUnavailable,
    BudgetExceeded,
    LedgerRecord,
    PlanEstimate,
    Principal,
    TenantMismatch,
    UpstreamCall,
    NANO,
    Usage,
    from_nusd,
    to_nusd,
)
from .prices import PriceBook
from .redis_client import close_client, make_client
from .spool import Spool

log = logging.getLogger("triage.accounting")


class AccountingSettings(BaseModel):
    fail_open: bool = False  # admission when Redis is unreachable: refuse (503) unless this is set
    # Generous: on a loaded 2-core host our own event loop is slow to read replies, and a Redis that
    # stalls for a second or two (fork for a snapshot, a busy neighbour) is slow, not down. Only an
    # unreachable Redis should fail requests, and that shows as a refused or timed-out connect.
    redis_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    # A connection that fails (stale after a Redis restart, reset by a proxy) is reconnected and the
    # command sent again this many times before it counts as a failure. Every script is idempotent.
    connection_retries: int = 1
    # Idle pooled connections are PINGed before reuse after this long, so a dead one is found first.
    health_check_interval_s: float = 10.0
    # A blocking pool: a burst waits briefly for a connection instead of failing (redis-py's plain pool
    # raises when exhausted, which would trip the breaker on load alone) or opening a connect storm.
    max_connections: int = 512  # a burst should wait on Redis, not on our own pool
    pool_wait_s: float = 5.0
    lease_ttl_s: float = 900.0  # a crashed worker's hold returns to the budget after this
    auth_cache_ttl_s: float = 5.0
    ledger_retention_days: int = 90
    ledger_maxlen: int | None = None  # if set, trim streams by length instead of age
    idempotency_days: int = 30  # how long a settled request id is remembered (spool replay window)
    spool_dir: str | None = None  # default: <TRIAGE_STATE_DIR or .triage>/spool
    counterfactual_model: str | None = None  # price-book name of the top tier's model
    # Consecutive failures (after retries) that open the breaker; while open, requests wait for one
    # shared PING instead of each timing out, and the first PING that answers closes it again.
    breaker_threshold: int = 5


def _lua(name: str) -> str:
    return resources.files("accounting").joinpath("lua", name).read_text()


def complexity_bucket(c: float | None) -> str:
    if c is None:
        return "na"
    b = min(9, max(0, int(c * 10)))
    return f"{b / 10:.1f}"


_day_cache: tuple[int, tuple[str, str]] = (-1, ("", ""))


def _today(now: datetime | None = None) -> tuple[str, str]:
    """UTC day and month bucket names; formatted once per day, not per request."""
    global _day_cache
    if now is None:
        epoch_day = int(time.time() // 86400)
        if epoch_day == _day_cache[0]:
            return _day_cache[1]
        now = datetime.fromtimestamp(epoch_day * 86400, timezone.utc)
        _day_cache = (epoch_day, (now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")))
        return _day_cache[1]
    return now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")


class Accountant:
    def __init__(self, redis: Any, settings: AccountingSettings, prices: PriceBook):
        self.redis = redis
        self.settings = settings
        self.prices = prices
        self.keys = KeyStore(redis)
        self.budgets = BudgetStore(redis)
        self.breaker = CircuitBreaker(settings.breaker_threshold)
        state = os.environ.get("TRIAGE_STATE_DIR", ".triage")
        self.spool = Spool(settings.spool_dir or os.path.join(state, "spool"))
        self._admit = redis.register_script(_lua("admit.lua"))
        self._settle = redis.register_script(_lua("settle.lua"))
        self._release = redis.register_script(_lua("release.lua"))
        self._feedback = redis.register_script(_lua("feedback.lua"))
        self._refuse = redis.register_script(_lua("refuse.lua"))
        self._renew = redis.register_script(_lua("renew.lua"))
        self._lengths: dict[str, tuple[float, dict[str, tuple[int, int]]]] = {}
        self._auth_cache: dict[str, tuple[float, Principal | None]] = {}
        self._replay_lock = asyncio.Lock()
        self._next_spool_check = 0.0
        self._bg: set[asyncio.Task[Any]] = set()
        self._policy_lock = asyncio.Lock()
        # tenant -> (version, scopes with a policy); a tenant's first admit loads its entry
        self._policies: dict[str, tuple[int, frozenset[str]]] = {}
        self._lease_ms = int(settings.lease_ttl_s * 1000)

    @classmethod
    async def connect(cls, redis_url: str, settings: AccountingSettings | None = None,
                      prices: PriceBook | None = None) -> "Accountant":
        settings = settings or AccountingSettings()
        # No socket_timeout: redis-py would wrap every write in asyncio.wait_for (a Task per
        # command). Hot-path calls are bounded by one asyncio.timeout in _call instead. A connection
        # error is retried on a fresh connection (stale after a Redis restart); every script is idempotent.
        r = make_client(redis_url, connect_timeout_s=settings.connect_timeout_s, socket_timeout_s=None,
                        max_connections=settings.max_connections, pool_wait_s=settings.pool_wait_s,
                        retries=settings.connection_retries,
                        health_check_interval_s=settings.health_check_interval_s)
        acct = cls(r, settings, prices or PriceBook({}))
        # Redis down at boot must not stop the proxy: admission then follows fail_open/closed.
        if await acct.ready():
            try:
                await acct.replay_spool()
            except AccountingUnavailable:
                pass
        return acct

    async def close(self) -> None:
        for t in list(self._bg):
            t.cancel()
        await close_client(self.redis)

    # -- health ---------------------------------------------------------------------------------

    async def ready(self) -> bool:
        ok = await self._ping()
        if ok:
            self.breaker.success()
            self._maybe_replay()  # health probes keep draining the spool even when traffic is idle
        else:
            self.breaker.failure()
        return ok

    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                return bool(await self.redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def _probe(self) -> bool:
        """The breaker's health probe; on recovery, drop idle pooled connections (stale since the outage)."""
        ok = await self._ping()
        if ok:
            pool = getattr(self.redis, "connection_pool", None)  # a cluster client keeps one per node
            if pool is not None:
                try:
                    await pool.disconnect(inuse_connections=False)
                except (RedisError, OSError):
                    pass
        return ok

    async def _usable(self) -> bool:
        return self.breaker.allow() or await self.breaker.usable(self._probe)

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if not await self._usable():
            raise AccountingUnavailable("accounting store unavailable (circuit open)")
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                res = await script(keys=keys, args=args)
        except TimeoutError as e:
            self.breaker.failure()
            raise AccountingUnavailable("accounting store unavailable: timeout") from e
        except (RedisError, OSError) as e:
            self.breaker.failure()
            raise AccountingUnavailable(f"accounting store unavailable: {type(e).__name__}") from e
        self.breaker.success()
        return res

    # -- keys -----------------------------------------------------------------------------------

    async def authenticate(self, api_key: str) -> Principal | None:
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

    # -- admission ------------------------------------------------------------------------------

    @staticmethod
    def effective_cap(principal: Principal, requested: float | None) -> float | None:
        """A request may lower its per-query cap, never raise it above policy."""
        cap = principal.max_cost_per_query
        if requested is not None and requested >= 0:
            cap = requested if cap is None else min(cap, requested)
        return cap

    async def admit(self, principal: Principal, request_id: str, plans: list[PlanEstimate],
                    max_cost_usd: float | None = None) -> Admission:
        if not plans:
            raise ValueError("admit needs at least one plan")
        cap = self.effective_cap(principal, max_cost_usd)
        idx = list(range(len(plans)))
        if cap is not None:
            idx = [i for i in idx if plans[i].estimate_usd <= cap + 1e-12]
            if not idx:
                cheapest = min(p.estimate_usd for p in plans)
                raise BudgetExceeded(
                    "per-query cap", cap, cap,
                    f"Request may cost up to ${cheapest:.6f}, above the per-query cost cap of ${cap:.6f}.",
                )
        try:
            if principal.tenant not in self._policies:
                await self._refresh_policies(principal.tenant)
            res, scope_names, ests = await self._admit_once(principal, request_id, plans, idx)
            if int(res[0]) == -1:  # policies changed since we cached them: refresh and retry once
                await self._refresh_policies(principal.tenant)
                res, scope_names, ests = await self._admit_once(principal, request_id, plans, idx)
                if int(res[0]) == -1:
                    raise AccountingUnavailable("budget policies changing too fast to admit")
        except AccountingUnavailable:
            if not self.settings.fail_open:
                raise
            p = plans[idx[0]]
            return Admission(
                request_id=request_id, plan_index=idx[0], reserved_usd=0.0, failed_open=True,
                tenant=principal.tenant, key_id=principal.key_id, tier=p.tier, model=p.model,
                store_prompts=principal.store_prompts,
            )
        if int(res[0]) == 0:
            scope = scope_names[int(res[1]) - 1]
            remaining, limit = max(0.0, from_nusd(res[2])), from_nusd(res[3])
            need = plans[idx[int(res[4])]].estimate_usd
            raise BudgetExceeded(
                scope, remaining, limit,
                f"Budget exceeded for {scope}: ${remaining:.6f} remaining of ${limit:.2f}; "
                f"this request may cost up to ${need:.6f}.",
            )
        k = int(res[1])
        p = plans[idx[k]]
        held = [scope_names[int(j) - 1] for j in _s(res[3]).split(",") if j]
        warnings: list[str] = []
        for w in res[4:]:
            j, used = _s(w).split(":")
            msg = f"{scope_names[int(j) - 1]} at ${from_nusd(used):.4f}"
            if msg not in warnings:
                warnings.append(msg)
        rem = int(res[2])
        return Admission(
            request_id=request_id, plan_index=idx[k], reserved_usd=from_nusd(ests[k]),
            remaining_usd=None if rem < 0 else from_nusd(rem),
            soft_warnings=warnings, tenant=principal.tenant, key_id=principal.key_id,
            tier=p.tier, model=p.model, held_scopes=held, reserved_nusd=ests[k],
            store_prompts=principal.store_prompts,
        )

    async def _refresh_policies(self, tenant: str) -> None:
        seen = self._policies.get(tenant)
        async with self._policy_lock:  # a burst of stale admits refreshes once, not once each
            if self._policies.get(tenant) is not seen:
                return
            try:
                async with asyncio.timeout(self.settings.redis_timeout_s):
                    snap = await self.budgets.snapshot(tenant)
                    # cross-tenant reads (exports, compaction, master-key feedback) find tenants here
                    await self.redis.sadd(rk.tenants_index(), tenant)
            except (RedisError, OSError, TimeoutError) as e:
                self.breaker.failure()
                raise AccountingUnavailable("accounting store unavailable") from e
            if len(self._policies) > 100_000:
                self._policies.clear()
            self._policies[tenant] = snap

    async def _admit_once(self, principal: Principal, request_id: str, plans: list[PlanEstimate],
                          idx: list[int]) -> tuple[Any, list[str], list[int]]:
        """One EVALSHA over only the scopes that have a policy (per the cached, version-checked index)."""
        day, month = _today()
        t = principal.tenant
        ver, have = self._policies.get(t, (-1, frozenset()))
        scope_ix: dict[str, int] = {}
        scope_names: list[str] = []
        keys: list[str] = [rk.budgets_version(t)]
        plan_args: list[Any] = []
        ests: list[int] = []
        for i in idx:
            p = plans[i]
            members = []
            if have:
                for s in rk.scopes_for(principal.tenant, principal.key_id, p.tier, p.model):
                    if s not in have:
                        continue
                    j = scope_ix.get(s)
                    if j is None:
                        scope_names.append(s)
                        j = scope_ix[s] = len(scope_names)
                        keys += (rk.budget(t, s), rk.spend(t, s), rk.holds(t, s))
                    members.append(j)
            est = to_nusd(p.estimate_usd)
            ests.append(est)
            plan_args += (est, len(members), *members)
        args = [request_id, day, month, self._lease_ms, len(scope_names), len(idx), ver, *plan_args]
        return await self._call(self._admit, keys, args), scope_names, ests

    # -- settlement -----------------------------------------------------------------------------

    def upstream_call(self, model: str, usage: Usage, **kw: Any) -> UpstreamCall:
        """An UpstreamCall with its cost filled in from the price book."""
        return UpstreamCall(
            model=model, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens, reasoning_tokens=usage.reasoning_tokens,
            cache_write_tokens=usage.cache_write_tokens, cost_usd=self.prices.cost(model, usage), **kw,
        )

    def _cost(self, adm: Admission, record: LedgerRecord) -> tuple[int, int]:
        """(cost, counterfactual) in integer nano-USD; every call's own cost is fixed to whole nano-USD
        first, so the record's total is exactly the sum of its calls."""
        for c in record.calls:
            if c.cost_usd == 0.0 and c.cost_nusd is None and (c.prompt_tokens or c.completion_tokens) \
                    and c.model in self.prices:
                c.cost_usd = self.prices.cost(c.model, c.usage(), c.service_tier)
            c.cost_nusd = c.nusd()
            c.cost_usd = c.cost_nusd / NANO
        if record.cost_nusd is not None:
            cost = record.cost_nusd
        elif record.cost_usd is not None:
            cost = to_nusd(record.cost_usd)
        else:
            cost = sum(c.cost_nusd or 0 for c in record.calls)
        if record.model in self.prices and self.prices.price(record.model).unpriced and adm.reserved_nusd:
            cost = max(cost, adm.reserved_nusd)  # configured to settle unpriced models at the reservation
        if record.counterfactual_nusd is not None:
            cf = record.counterfactual_nusd
        elif record.counterfactual_cost_usd is not None:
            cf = to_nusd(record.counterfactual_cost_usd)
        else:
            m = self.settings.counterfactual_model
            if m and m in self.prices:
                cf = to_nusd(self.prices.cost(m, record.total_usage()))
                record.counterfactual_method = record.counterfactual_method or "top-model-at-usage"
            else:
                cf = cost
                record.counterfactual_method = record.counterfactual_method or "none"
        return cost, cf

    @staticmethod
    def rollup_prefix(key_id: str, tier: str, model: str, bucket: str, workflow: str) -> str:
        return "|".join(_clean(v) for v in (key_id, tier, model, bucket, workflow)) + "|"

    def _trim(self, ts: float) -> tuple[str, str]:
        s = self.settings
        if s.ledger_maxlen:
            return "MAXLEN", str(s.ledger_maxlen)
        return "MINID", f"{int((ts - s.ledger_retention_days * 86400) * 1000)}-0"

    def _settle_call(self, adm: Admission, record: LedgerRecord) -> tuple[list[str], list[Any]]:
        cost, cf = self._cost(adm, record)
        record.cost_nusd, record.counterfactual_nusd = cost, cf
        record.cost_usd, record.counterfactual_cost_usd = cost / NANO, cf / NANO
        if not adm.store_prompts:
            record.prompt = None
        if record.ts is None:
            record.ts = time.time()
        if not record.tier:
            record.tier = adm.tier
        if not record.model:
            record.model = adm.model
        tenant = record.tenant or adm.tenant
        kid = record.key_id or adm.key_id
        now = datetime.fromtimestamp(record.ts, timezone.utc)
        day, month = _today(now)
        usage = record.total_usage()
        s = self.settings
        trim_kind, trim_arg = self._trim(record.ts)
        bucket = complexity_bucket(record.complexity)
        keys = [rk.done(tenant, record.request_id), rk.ledger(tenant), rk.request(tenant, record.request_id),
                rk.rollup(tenant, day), rk.top_lengths(tenant)]
        for sc in adm.held_scopes:
            keys += (rk.spend(adm.tenant, sc), rk.holds(adm.tenant, sc))
        # Tier, key and tenant scopes are charged the whole cost; model scopes the cost of calls to
        # that model (a fallback hop to another model counts against that model's budget).
        total = cost
        k_scope, t_scope = rk.scope_key(kid), rk.scope_tenant(tenant)
        charge = [k_scope, t_scope, rk.scope_tier(k_scope, record.tier), rk.scope_tier(t_scope, record.tier)]
        amounts = [total] * 4
        per_model: dict[str, int] = {}
        for c in record.calls:
            per_model[c.model] = per_model.get(c.model, 0) + (c.cost_nusd or 0)
        home = adm.model or record.model
        per_model[home] = per_model.get(home, 0) + total - sum(per_model.values())  # overrides, unpriced
        for m, amt in per_model.items():
            charge += (rk.scope_model(k_scope, m), rk.scope_model(t_scope, m))
            amounts += (amt, amt)
        keys += [rk.spend(tenant, sc) for sc in charge]
        learn_calls = learn_ct = 0
        if record.counterfactual_method == "top-tier" and record.status == "ok":
            ok = [c for c in record.calls if c.status == "ok" and not c.estimated]
            learn_calls, learn_ct = len(ok), sum(c.completion_tokens for c in ok)
        billed = sum(1 for c in record.calls if c.billed_failure)
        cf_est = 1 if (record.counterfactual_method or "").startswith("top-tier-plan") else 0
        nums = (adm.reserved_nusd, cost, cf, usage.prompt_tokens, usage.cached_tokens,
                usage.completion_tokens, usage.reasoning_tokens, len(adm.held_scopes), len(charge),
                s.idempotency_days * 86400, s.ledger_retention_days * 86400 + 86400, cf_est, billed,
                learn_calls, learn_ct)
        pre = self.rollup_prefix(kid, record.tier, record.model, bucket, record.workflow)
        strs = (day, month, pre, tenant, kid, record.tier, record.model, bucket)
        args = [record.request_id, f"{adm.request_id}|{adm.reserved_nusd}", record.model_dump_json(), trim_kind,
                trim_arg, " ".join(map(str, nums)), "\x1f".join(strs), " ".join(map(str, amounts))]
        return keys, args

    async def settle(self, adm: Admission, record: LedgerRecord) -> bool:
        """Charge, ledger and roll up; True if applied now, False if spooled or a duplicate."""
        keys, args = self._settle_call(adm, record)
        try:
            res = await self._call(self._settle, keys, args)
        except AccountingUnavailable:
            self.spool.append({"keys": keys, "args": [a.decode() if isinstance(a, bytes) else a for a in args]})
            log.warning("ledger write spooled for request %s", record.request_id)
            return False
        self._maybe_replay()
        return bool(res)

    async def release(self, adm: Admission, record: LedgerRecord | None = None) -> None:
        if record is not None:
            await self.settle(adm, record)
            return
        if not adm.held_scopes:
            return
        keys: list[str] = []
        for sc in adm.held_scopes:
            keys += (rk.spend(adm.tenant, sc), rk.holds(adm.tenant, sc))
        try:
            await self._call(self._release, keys, [f"{adm.request_id}|{adm.reserved_nusd}", adm.reserved_nusd])
        except AccountingUnavailable:
            pass  # the lease expires on its own; nothing was spent

    async def refuse(self, record: LedgerRecord, estimate_nusd: int, reason: str = "budget_exceeded") -> None:
        """Ledger a refused request (no cost, the reason, the estimate that did not fit). Best effort:
        a refusal is answered whether or not Redis takes the row."""
        record.kind = "refusal"
        record.status = "refused"
        record.cost_nusd, record.cost_usd = 0, 0.0
        record.counterfactual_nusd, record.counterfactual_cost_usd = 0, 0.0
        record.refused_estimate_nusd = estimate_nusd
        record.prompt = None
        if record.ts is None:
            record.ts = time.time()
        day, _ = _today(datetime.fromtimestamp(record.ts, timezone.utc))
        pre = self.rollup_prefix(record.key_id, record.tier, record.model, complexity_bucket(record.complexity),
                                 record.workflow)
        trim_kind, trim_arg = self._trim(record.ts)
        try:
            await self._call(self._refuse, [rk.ledger(record.tenant), rk.rollup(record.tenant, day)],
                             [record.request_id, record.model_dump_json(), trim_kind, trim_arg, pre, estimate_nusd,
                              self.settings.ledger_retention_days * 86400 + 86400, _clean(reason)])
        except AccountingUnavailable:
            log.warning("refusal of request %s not ledgered: accounting store unavailable", record.request_id)

    async def renew(self, adm: Admission) -> bool:
        """Push a live request's hold expiry one lease further; False if no hold was left to renew."""
        if not adm.held_scopes:
            return True
        try:
            n = await self._call(self._renew, [rk.holds(adm.tenant, sc) for sc in adm.held_scopes],
                                 [f"{adm.request_id}|{adm.reserved_nusd}", self._lease_ms])
        except AccountingUnavailable:
            return True  # cannot tell; the next renewal tries again
        return int(n) > 0

    async def top_lengths(self, tenant: str, max_age_s: float = 30.0) -> dict[str, tuple[int, int]]:
        """Per complexity bucket: (the tenant's top-tier calls, their completion tokens), learned at settle;
        cached per tenant for ``max_age_s``."""
        at, cached = self._lengths.get(tenant, (-1e9, {}))
        now = time.monotonic()
        if now - at < max_age_s or not self.breaker.allow():
            return cached
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                raw = await self.redis.hgetall(rk.top_lengths(tenant))
        except (RedisError, OSError, TimeoutError):
            return cached
        acc: dict[str, list[int]] = {}
        for k, v in raw.items():
            b, _, metric = _s(k).rpartition("|")
            acc.setdefault(b, [0, 0])[0 if metric == "calls" else 1] = int(_s(v))
        out = {b: (c, t) for b, (c, t) in acc.items()}
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
                    p.xadd(rk.evals(record.tenant), {"rid": record.request_id, "d": record.model_dump_json()},
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

    # -- spool ----------------------------------------------------------------------------------

    def _maybe_replay(self) -> None:
        now = time.monotonic()
        if now < self._next_spool_check or self._replay_lock.locked():
            return
        self._next_spool_check = now + 2.0
        if not self.spool.dir.is_dir() or not any(self.spool.dir.iterdir()):
            return
        t = asyncio.get_running_loop().create_task(self.replay_spool())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def replay_spool(self) -> int:
        async with self._replay_lock:
            async def apply(entry: dict[str, Any]) -> None:
                await self._call(self._settle, entry["keys"], entry["args"])

            return await self.spool.replay(apply)

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

    # -- quality --------------------------------------------------------------------------------

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


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _clean(v: str | None) -> str:
    """A rollup field part: no separator inside, never empty."""
    return (v or "-").replace("|", "/")
