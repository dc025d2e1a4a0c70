"""What the client is told about cost, and what keeps a live request's money held.

Every figure comes from the integer nano-USD the ledger books (`ExecContext.spent_nusd`), so the
``x-triage-cost-usd`` header, ``usage.cost`` in the body, the stream's cost comment, the ledger, the
budget counters, reports and exports agree to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import orjson

from accounting import Admission, LedgerRecord, Principal
from accounting.models import NANO, to_nusd, usd_str

log = logging.getLogger("triage.metering")



def cost_headers(nusd: int) -> dict[str, str]:
    return {"x-triage-cost-usd": usd_str(nusd), "x-triage-cost-nusd": str(nusd)}


def usage_cost(usage: dict[str, Any], nusd: int) -> None:
    """usage.cost (dollars, a JSON number derived from the integer) and usage.cost_nusd (the integer)."""
    usage["cost"] = nusd / NANO
    usage["cost_nusd"] = nusd


def cost_comment(request_id: str, nusd: int) -> bytes:
    """The stream's last word before [DONE]: an SSE comment line, which every SSE parser (the openai SDK's
    included) skips, so it reaches clients that read it without breaking those that don't."""
    body = orjson.dumps({"request_id": request_id, "cost_usd": usd_str(nusd), "cost_nusd": nusd})
    return b": triage-cost " + body + b"\n\n"


async def record_refusal(acct: Any, principal: Principal, rid: str, virtual_model: str, decision: Any,
                         reason: str, why: str, wf: str) -> None:
    """Denied demand goes in the ledger: no cost, the reason, the cheapest estimate that was refused."""
    plans = decision.plans
    cheapest = min(plans, key=lambda p: p.estimate_usd) if plans else None
    rec = LedgerRecord(
        request_id=rid, key_id=principal.key_id, tenant=principal.tenant, virtual_model=virtual_model,
        tier=cheapest.tier if cheapest else "", model=cheapest.primary_model if cheapest else "",
        complexity=decision.complexity, reason=f"{reason}: {why}"[:300], workflow=wf,
    )
    try:
        await acct.refuse(rec, to_nusd(cheapest.estimate_usd) if cheapest else 0, reason)
    except Exception:  # a refusal is answered whether or not it could be ledgered
        log.exception("ledgering refusal %s failed", rid)


_AT_LEAST = re.compile(r"at least \$([0-9]+(?:\.[0-9]+)?)")


async def refusal_below_cap(acct: Any, principal: Principal, rid: str, virtual_model: str, complexity: float,
                            message: str, wf: str) -> None:
    """A per-query cap below the cheapest possible answer (a 400): ledgered with that cheapest answer."""
    m = _AT_LEAST.search(message)
    rec = LedgerRecord(request_id=rid, key_id=principal.key_id, tenant=principal.tenant,
                       virtual_model=virtual_model, complexity=complexity,
                       reason=f"cost_cap_below_minimum: {message}"[:300], workflow=wf)
    try:
        await acct.refuse(rec, to_nusd(float(m.group(1))) if m else 0, "cost_cap_below_minimum")
    except Exception:
        log.exception("ledgering refusal %s failed", rid)


class LeaseKeeper:
    """Renews a request's holds every third of the lease while the request lives, so a long debate or
    stream never outlives its hold (which would let another request spend the same money)."""

    __slots__ = ("task",)

    def __init__(self, acct: Any, adm: Admission) -> None:
        self.task: asyncio.Task[None] | None = None
        if adm.held_scopes and not adm.failed_open:
            self.task = asyncio.get_running_loop().create_task(self._run(acct, adm))

    @staticmethod
    async def _run(acct: Any, adm: Admission) -> None:
        every = max(acct.settings.lease_ttl_s / 3.0, 0.05)
        while True:
            await asyncio.sleep(every)
            try:
                if not await acct.renew(adm):
                    return  # settled or released meanwhile
            except Exception:  # renewal is best effort; the next tick tries again
                log.exception("renewing the hold of %s failed", adm.request_id)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
