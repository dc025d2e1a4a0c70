"""Process-wide state: the current config snapshot and the long-lived clients.

Built once at startup; `reload()` swaps only the snapshot, so the pooled HTTP
client, the Redis pool and the loaded classifier survive a config change.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Coroutine

from accounting import Accountant, AccountingSettings, count_text_tokens
from accounting.response_cache import ResponseCache
from accounting.workflows import Workflows
from classifier import Classifier
from router.config import TriageConfig
from router.observe.hub import Observability
from router.runtime import Snapshot
from router.session import SessionPins
from router.upstream import Upstream

log = logging.getLogger("triage.state")


@dataclass(eq=False)
class AppState:
    snapshot: Snapshot
    upstream: Upstream
    accountant: Accountant
    config_path: str | None = None
    defaults_upstream: str | None = None
    sessions: SessionPins = field(default_factory=SessionPins)
    obs: Observability | None = None
    cache: ResponseCache | None = None
    workflows: Workflows | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _compactor: asyncio.Task[Any] | None = None

    @property
    def classifier(self) -> Classifier:
        """The default artifact (per-tenant ones: `snapshot.classifiers.for_tenant`)."""
        return self.snapshot.classifiers.for_tenant(None)

    @property
    def master_key(self) -> str | None:
        return self.snapshot.config.master_key

    @classmethod
    async def start(cls, config: TriageConfig, *, config_path: str | None = None,
                    defaults_upstream: str | None = None) -> "AppState":
        snap = Snapshot.build(config)
        count_text_tokens("warm")  # load the tokenizer now, not on the first request
        upstream = Upstream()
        await upstream.start()
        settings = accounting_settings(config)
        accountant = await Accountant.connect(config.redis_url or "", settings, snap.prices)
        obs = Observability.start(config.observability, accountant)
        obs.providers = {name: ds[0].provider for name, ds in snap.deployments.items() if ds}
        if obs.metrics is not None:
            obs.metrics.declare(list(snap.deployments))
        st = cls(snapshot=snap, upstream=upstream, accountant=accountant,
                 config_path=config_path, defaults_upstream=defaults_upstream, obs=obs)
        c = config.cache
        st.cache = ResponseCache(accountant.redis, ttl_s=c.ttl_s, max_entries=c.max_entries,
                                 max_entry_bytes=c.max_entry_bytes)
        st.workflows = Workflows(accountant.redis, ttl_s=int(config.workflows.ttl_days * 86400))
        a = config.accounting
        if a.cold_ledger_url:
            from accounting.cold import ColdLedger, compact_forever  # noqa: PLC0415 - optional extra

            accountant.cold = ColdLedger(a.cold_ledger_url)
            if a.cold_compact_every_s > 0:
                # a background task, not spawn(): close() cancels it rather than waiting for it
                st._compactor = asyncio.get_running_loop().create_task(compact_forever(
                    accountant.redis, accountant.cold, a.cold_after_days, a.cold_compact_every_s))
        freeze_heap()
        return st

    def reload(self) -> Snapshot:
        """Re-read the config file and swap the snapshot; raises on an invalid file, keeping the old one."""
        if self.config_path is None:
            raise ValueError("running on embedded defaults: there is no config file to reload")
        config = TriageConfig.load(Path(self.config_path))
        snap = Snapshot.build(config)
        self.accountant.prices = snap.prices
        self.snapshot = snap
        gc.unfreeze()  # the old snapshot can be collected now; what stays is frozen again
        freeze_heap()
        log.info("config reloaded from %s", self.config_path)
        return snap

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run metering work that must outlive the request (e.g. after a client disconnect)."""
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.obs is not None:
            await self.obs.close()
        await self.upstream.close()
        await self.accountant.close()
        thaw_heap()


# A request keeps a few hundred tracked objects alive while it runs, so at CPython's default (700) a dozen
# concurrent requests start a young collection every few requests, which frees nothing (they are alive)
# and only promotes them; this many lets the young generation hold them and collect real garbage.
GC_YOUNG_THRESHOLD = 10_000
_THRESHOLD = gc.get_threshold()  # what the process had, for thaw_heap()


def freeze_heap() -> None:
    """Take what startup loaded (config, prices, classifier, tokenizer, pydantic's schemas) out of the
    cyclic collector's sight: otherwise every full collection walks that whole heap, a pause of ~0.1 s
    of CPU a few times a minute under load. Reference counting still frees it; only a cycle in it would
    outlive its use, so a reload and close() move it back first."""
    gc.collect()
    gc.freeze()
    young, mid, old = gc.get_threshold()
    if young and young < GC_YOUNG_THRESHOLD:  # 0: collection is off; leave that alone
        gc.set_threshold(GC_YOUNG_THRESHOLD, mid, old)


def thaw_heap() -> None:
    """Undo freeze_heap() when the server stops (the process may go on: tests, an embedding app)."""
    gc.unfreeze()
    if gc.get_threshold()[0] == GC_YOUNG_THRESHOLD:
        gc.set_threshold(*_THRESHOLD)


def accounting_settings(config: TriageConfig) -> AccountingSettings:
    a = config.accounting
    extra = a.model_dump(exclude={"admission_on_redis_error", "settle_unpriced_at_estimate", "ledger_retention_days", "spool_dir"})
    kwargs: dict[str, Any] = {
        "fail_open": a.admission_on_redis_error == "open",
        "ledger_retention_days": a.ledger_retention_days,
    }
    if a.spool_dir:
        kwargs["spool_dir"] = a.spool_dir
    fields = getattr(AccountingSettings, "model_fields", {})
    kwargs = {k: v for k, v in {**extra, **kwargs}.items() if k in fields}
    return AccountingSettings(**kwargs)
