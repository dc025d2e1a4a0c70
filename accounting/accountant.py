"""The facade the router calls: authenticate, admit, settle, release, feedback.

Hot path cost: ``authenticate`` is served from an in-process cache (a few
seconds), ``admit`` is one EVALSHA, ``settle`` is one EVALSHA. Every Redis
call is bounded by a short timeout and guarded by a circuit breaker; settle
never raises to the client — what Redis can't take goes to the local spool and
is replayed, idempotently, once Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from redis.exceptions import RedisError

from . import redis_keys as rk
from .auth_cache import AuthMixin
from .breaker import CircuitBreaker
from .budgets import BudgetStore
from .evaluations import EvaluationMixin
from .feedback import FeedbackMixin
from .keys import KeyStore
from .models import (
    AccountingUnavailable,
    Admission,
    BudgetExceeded,
    LedgerRecord,
    PlanEstimate,
    Principal,
    UpstreamCall,
    Usage,
    from_nusd,
    to_nusd,
    usd,
)
from .prices import PriceBook
from .redis_client import close_client, make_client
from .refusals import RefusalMixin
from .script_batch import ScriptBatcher
from .settings import AccountingSettings, complexity_bucket
from .settings import as_str as _s
from .settings import lua as _lua
from .settings import today as _today
from .settlement import SettlementMixin
from .spool import RecentSettles, Spool
from .spool import entry as spool_entry

WORKFLOW_BUDGET_TTL_S = 30 * 86400  # a workflow's cap and spend outlive its last step by a month

log = logging.getLogger("triage.accounting")

__all__ = ["Accountant", "AccountingSettings", "complexity_bucket"]


class Accountant(AuthMixin, SettlementMixin, EvaluationMixin, FeedbackMixin, RefusalMixin):
    def __init__(self, redis: Any, settings: AccountingSettings, prices: PriceBook):
        self.redis = redis
        self.settings = settings
        self.prices = prices
        self.keys = KeyStore(redis)
        self.budgets = BudgetStore(redis)
        self.breaker = CircuitBreaker(settings.breaker_threshold)
        state = os.environ.get("TRIAGE_STATE_DIR", ".triage")
        self.spool = Spool(settings.spool_dir or os.path.join(state, "spool"))
        self._recent = RecentSettles(settings.replication_guard_s)
        self.cold: Any = None  # a cold.ColdLedger when configured: reports and exports read it too
        self._admit = redis.register_script(_lua("admit.lua"))
        self._settle = redis.register_script(_lua("settle.lua"))
        self._release = redis.register_script(_lua("release.lua"))
        self._feedback = redis.register_script(_lua("feedback.lua"))
        self._refuse = redis.register_script(_lua("refuse.lua"))
        self._renew = redis.register_script(_lua("renew.lua"))
        self._scripts = ScriptBatcher(redis, settings.redis_timeout_s, settings.connection_retries)
        self._lengths: dict[str, tuple[float, dict[str, dict[str, int]]]] = {}
        self._auth_cache: dict[str, tuple[float, Principal | None]] = {}
        self._keys_watch: asyncio.Task[None] | None = None
        self._replay_lock = asyncio.Lock()
        self._next_spool_check = 0.0
        self._bg: set[asyncio.Task[Any]] = set()
        self._policy_lock = asyncio.Lock()
        # tenant -> (version, scopes with a policy); a tenant's first admit loads its entry
        self._policies: dict[str, tuple[int, frozenset[str]]] = {}
        self._lease_ms = int(settings.lease_ttl_s * 1000)
        self._admit_shapes: dict[tuple[Any, ...], tuple[list[str], list[str], list[tuple[int, ...]]]] = {}
        self._settle_shapes = {}

    @classmethod
    async def connect(cls, redis_url: str, settings: AccountingSettings | None = None,
                      prices: PriceBook | None = None) -> "Accountant":
        settings = settings or AccountingSettings()
        # No socket_timeout: redis-py would wrap every write in asyncio.wait_for (a Task per
        # command). Script calls are bounded by the ScriptBatcher's deadline, other hot-path reads by an
        # asyncio.timeout. A connection error is retried on a fresh connection (stale after a Redis
        # restart); every script is idempotent.
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
        await self._scripts.close()
        await close_client(self.redis)

    # -- health ---------------------------------------------------------------------------------

    async def ready(self) -> bool:
        ok = await self._ping()
        if ok:
            self.breaker.success()
            self._maybe_replay()  # health probes keep draining the spool even when traffic is idle
        else:
            self.breaker.failure()
            self._guard_recent()
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

    async def _call(self, script: Any, keys: list[str], args: list[Any], sent: asyncio.Future[None] | None = None) -> Any:
        if not self.breaker.allow() and not await self.breaker.usable(self._probe):
            raise AccountingUnavailable("accounting store unavailable (circuit open)")
        try:
            res = await self._scripts.run(script, keys, args, sent)  # fails within redis_timeout_s
        except TimeoutError as e:
            self.breaker.failure()
            self._guard_recent()
            raise AccountingUnavailable("accounting store unavailable: timeout") from e
        except (RedisError, OSError) as e:
            self.breaker.failure()
            self._guard_recent()
            raise AccountingUnavailable(f"accounting store unavailable: {type(e).__name__}") from e
        self.breaker.success()
        return res

    def _guard_recent(self) -> None:
        """The store just failed: the settles it acknowledged lately may die with it (replication is
        asynchronous), so spool them; replay re-applies only those missing (the done marker)."""
        self.spool.extend(self._recent.drain())

    # -- admission ------------------------------------------------------------------------------

    @staticmethod
    def effective_cap(principal: Principal, requested: float | None) -> float | None:
        """A request may lower its per-query cap, never raise it above policy."""
        cap = principal.max_cost_per_query
        if requested is not None and requested >= 0:
            cap = requested if cap is None else min(cap, requested)
        return cap

    async def admit(self, principal: Principal, request_id: str, plans: list[PlanEstimate],
                    max_cost_usd: float | None = None, workflow: tuple[str, float] | None = None) -> Admission:
        """`workflow`: (id, cap USD): the workflow's steps together may not spend past the cap; the scope is
        held and charged atomically with the key and tenant budgets."""
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
                    f"Request may cost up to {usd(cheapest)}, above the per-query cost cap of {usd(cap)}.",
                )
        wscope: str | None = None
        try:
            wscope = await self._workflow_budget(principal.tenant, *workflow) if workflow else None
            res, scope_names, ests = await self._admit_waiting(principal, request_id, plans, idx, wscope)
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
            spent, held, limit = from_nusd(res[2]), from_nusd(res[3]), from_nusd(res[4])
            need = plans[idx[int(res[5])]].estimate_usd
            retryable = int(res[6]) == 1
            why = ("requests in flight hold the rest; retry shortly" if retryable
                   else "spent money alone leaves too little")
            name = f"workflow '{workflow[0]}'" if (workflow and scope == wscope) else scope
            raise BudgetExceeded(
                scope, max(0.0, limit - spent - held), limit,
                f"Budget exceeded for {name}: spent {usd(spent)}, held by requests in flight {usd(held)}, "
                f"limit {usd(limit)}, remaining {usd(max(0.0, limit - spent - held))}; this request may cost "
                f"up to {usd(need)} ({why}).",
                spent_usd=spent, held_usd=held, retryable=retryable,
            )
        k = int(res[1])
        p = plans[idx[k]]
        held_scopes = [scope_names[int(j) - 1] for j in _s(res[3]).split(",") if j]
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
            tier=p.tier, model=p.model, held_scopes=held_scopes, reserved_nusd=ests[k],
            store_prompts=principal.store_prompts, workflow_scope=wscope,
        )

    async def _admit_waiting(self, principal: Principal, request_id: str, plans: list[PlanEstimate],
                             idx: list[int], wscope: str | None = None) -> tuple[Any, list[str], list[int]]:
        """Admit; a refusal caused only by holds of requests in flight is retried for up to
        ``hold_wait_s`` (they settle, usually for less than they held) before it is returned."""
        deadline = time.monotonic() + self.settings.hold_wait_s
        pause = 0.02
        t = principal.tenant
        while True:
            if t not in self._policies:
                await self._refresh_policies(t)
            keys, args, scope_names, ests = self._admit_call(principal, request_id, plans, idx, wscope)
            res = await self._call(self._admit, keys, args)
            if int(res[0]) == -1:  # policies changed since we cached them: refresh and retry once
                await self._refresh_policies(t)
                keys, args, scope_names, ests = self._admit_call(principal, request_id, plans, idx, wscope)
                res = await self._call(self._admit, keys, args)
                if int(res[0]) == -1:
                    raise AccountingUnavailable("budget policies changing too fast to admit")
            if int(res[0]) != 0 or int(res[6]) != 1 or time.monotonic() + pause > deadline:
                return res, scope_names, ests
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)

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

    async def _workflow_budget(self, tenant: str, workflow_id: str, cap_usd: float) -> str:
        """Write the workflow's cap as a total-period hard budget of its own scope (the latest cap sent wins)."""
        scope = rk.scope_workflow(workflow_id)
        key = rk.budget(tenant, scope)
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                async with self.redis.pipeline(transaction=False) as p:
                    p.hset(key, mapping={"limit": to_nusd(cap_usd), "period": "total", "mode": "hard"})
                    p.expire(key, WORKFLOW_BUDGET_TTL_S)
                    p.expire(rk.spend(tenant, scope), WORKFLOW_BUDGET_TTL_S)
                    await p.execute()
        except (TimeoutError, RedisError, OSError) as e:
            raise AccountingUnavailable(f"accounting store unavailable: {type(e).__name__}") from e
        return scope

    async def workflow_spent(self, tenant: str, workflow_id: str) -> tuple[int, int]:
        """(settled nano-USD, held nano-USD) of a workflow's budget."""
        v = await self.redis.hmget(rk.spend(tenant, rk.scope_workflow(workflow_id)), "t", "reserved")
        return int(v[0] or 0), int(v[1] or 0)

    def _admit_call(self, principal: Principal, request_id: str, plans: list[PlanEstimate], idx: list[int],
                    wscope: str | None) -> tuple[list[str], list[Any], list[str], list[int]]:
        """admit.lua's keys and args, over only the scopes that have a policy (per the cached, version-checked
        index), the scopes they name, and each admissible plan's estimate in nano-USD."""
        day, month = _today()
        t = principal.tenant
        ver, have = self._policies.get(t, (-1, frozenset()))
        # A key's requests route to the same few (tier, model) plans: their scopes and key names are
        # derived once per policy-index version, not per request.
        shape_key = (t, principal.key_id, ver, have, wscope, *[(plans[i].tier, plans[i].model) for i in idx])
        shape = self._admit_shapes.get(shape_key)
        if shape is None:
            shape = self._admit_shape(t, principal.key_id, [plans[i] for i in idx], have, wscope)
            if len(self._admit_shapes) > 10_000:
                self._admit_shapes.clear()
            self._admit_shapes[shape_key] = shape
        keys, scope_names, members = shape
        ests = [to_nusd(plans[i].estimate_usd) for i in idx]
        args: list[Any] = [request_id, day, month, self._lease_ms, len(scope_names), len(idx), ver]
        for est, m in zip(ests, members):
            args.append(est)
            args += m
        return keys, args, scope_names, ests

    @staticmethod
    def _admit_shape(t: str, key_id: str, plans: list[PlanEstimate], have: frozenset[str],
                     wscope: str | None) -> tuple[list[str], list[str], list[tuple[int, ...]]]:
        """admit.lua's KEYS, the scopes they name, and per plan (count, scope indices...)."""
        scope_ix: dict[str, int] = {}
        scope_names: list[str] = []
        keys: list[str] = [rk.budgets_version(t)]
        members: list[tuple[int, ...]] = []
        for p in plans:
            mine = [s for s in rk.scopes_for(t, key_id, p.tier, p.model) if s in have] if have else []
            if wscope is not None:
                mine.append(wscope)
            js = []
            for s in mine:
                j = scope_ix.get(s)
                if j is None:
                    scope_names.append(s)
                    j = scope_ix[s] = len(scope_names)
                    keys += (rk.budget(t, s), rk.spend(t, s), rk.holds(t, s))
                js.append(j)
            members.append((len(js), *js))
        return keys, scope_names, members

    # -- settlement -----------------------------------------------------------------------------

    def upstream_call(self, model: str, usage: Usage, **kw: Any) -> UpstreamCall:
        """An UpstreamCall with its cost filled in from the price book."""
        return UpstreamCall(
            model=model, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens, reasoning_tokens=usage.reasoning_tokens,
            cache_write_tokens=usage.cache_write_tokens, cost_usd=self.prices.cost(model, usage), **kw,
        )

    async def settle(self, adm: Admission, record: LedgerRecord, sent: asyncio.Future[None] | None = None) -> bool:
        """Charge, ledger and roll up; True if applied now, False if spooled or a duplicate.

        ``sent`` is resolved once the record is on its way to Redis (or spooled): a caller may answer the
        client then, and the settle's own bytes still reach Redis before the answer reaches the client."""
        try:
            keys, args = self._settle_call(adm, record)
            try:
                res = await self._call(self._settle, keys, args, sent)
            except AccountingUnavailable:
                self.spool.append(spool_entry(keys, args))
                log.warning("ledger write spooled for request %s", record.request_id)
                return False
        finally:
            if sent is not None and not sent.done():
                sent.set_result(None)
        self._recent.add(keys, args)
        if record.counterfactual_method == "top-tier":
            self._lengths.pop(record.tenant or adm.tenant, None)  # what the counterfactual learns just grew
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
