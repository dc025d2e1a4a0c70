"""Records around a request that are not its settlement: refusals (denied demand) and hold renewal."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import redis_keys as rk
from .models import AccountingUnavailable, Admission, LedgerRecord
from .settings import clean as _clean
from .settings import complexity_bucket
from .settings import today as _today

if TYPE_CHECKING:
    from .settings import AccountingSettings

log = logging.getLogger("triage.accounting")


class RefusalMixin:
    """Part of `Accountant` (accounting/accountant.py), split out to keep modules small."""

    settings: AccountingSettings
    _refuse: Any
    _renew: Any
    _lease_ms: int

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        raise NotImplementedError

    def _trim(self, ts: float) -> tuple[str, str]:
        raise NotImplementedError

    @staticmethod
    def rollup_prefix(key_id: str, tier: str, model: str, bucket: str, workflow: str) -> str:
        raise NotImplementedError

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
                             [record.request_id, record.to_json(), trim_kind, trim_arg, pre, estimate_nusd,
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

