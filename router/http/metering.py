"""What the client is told about cost, and what keeps a live request's money held.

Every figure comes from the integer nano-USD the ledger books (`ExecContext.spent_nusd`), so the
``x-triage-cost-usd`` header, ``usage.cost`` in the body, the stream's cost comment, the ledger, the
budget counters, reports and exports agree to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
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


def answer_headers(meta: Any, rid: str, nusd: int | None, ctx: Any = None, answered: str | None = None) -> dict[str, str]:
    """The x-triage-* headers of an answer (`meta`: router.http.meta.RequestMeta); `nusd` None before the
    cost is known (a stream's headers)."""
    d = meta.decision
    plan = meta.plan
    if answered not in meta.snap.deployments:  # the executor's word on who answered, when it is a config model
        answered = next((c.model for c in reversed(ctx.calls) if c.status == "ok"), None) if ctx else None
    h = {
        "x-request-id": rid,
        "x-triage-tier": plan.tier,
        "x-triage-model": answered or plan.primary_model,
        "x-triage-complexity": f"{d.complexity:.3f}",
        "x-triage-decision": _decision_header(d.reason, plan.note, meta.clf_version),
    }
    esc = ctx.outcome.get("escalated") if ctx is not None else None
    if esc is not None:   # cascade: known once the check ran (non-streamed responses)
        h["x-triage-escalated"] = ("yes: " + ", ".join(ctx.outcome.get("why") or [])) if esc else "no"
    sent = plan.max_tokens
    if meta.asked_tokens is not None and sent is not None and sent < meta.asked_tokens:
        h["x-triage-max-tokens"] = f"{sent} (requested {meta.asked_tokens}; {plan.tier} tier cap)"
    adm = meta.adm
    rem = adm.remaining_usd
    if nusd is not None:
        h["x-triage-cost-usd"] = usd_str(nusd)
        h["x-triage-cost-nusd"] = str(nusd)
        if rem is not None:
            h["x-triage-budget-remaining-usd"] = f"{max(rem + adm.reserved_usd - nusd / NANO, 0.0):.6f}"
    elif rem is not None:
        h["x-triage-budget-remaining-usd"] = f"{rem:.6f}"
    if adm.soft_warnings:
        h["x-triage-budget-warning"] = "; ".join(adm.soft_warnings)[:200]
    return h


_said: dict[tuple[str, str, str], str] = {}


def _decision_header(reason: str, note: str, clf_version: str) -> str:
    """Requests repeat a few reasons: each header is built once."""
    k = (reason, note, clf_version)
    h = _said.get(k)
    if h is None:
        # the artifact version last and never truncated: it says which model made the call
        h = (reason + (f"; {note}" if note else ""))[:150] + f"; classifier={clf_version}"
        if len(_said) > 4096:
            _said.clear()
        _said[k] = h
    return h


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


class HoldRenewer:
    """Renews the holds of every live request every third of the lease, so a long debate or stream never
    outlives its hold (which would let another request spend the same money).

    One task for all of a worker's requests, not one per request: a task created and cancelled for
    every request cost more than the renewals themselves, which almost never happen (the default lease
    is 15 minutes). The task runs only while some request holds money, sleeping until the next
    renewal is due.
    """

    __slots__ = ("live", "task", "_wake", "_timer")

    def __init__(self) -> None:
        # request id -> (accountant, admission, renewal interval, when its next renewal is due)
        self.live: dict[str, tuple[Any, Admission, float, float]] = {}
        self.task: asyncio.Task[None] | None = None
        self._wake = 0.0
        self._timer: asyncio.Future[None] | None = None

    def add(self, acct: Any, adm: Admission) -> None:
        if not adm.held_scopes or adm.failed_open:
            return
        every = max(acct.settings.lease_ttl_s / 3.0, 0.05)
        due = time.monotonic() + every  # not loop.time(): no loop lookup per request (a getpid on 3.11)
        self.live[adm.request_id] = (acct, adm, every, due)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        elif due < self._wake and self._timer is not None and not self._timer.done():
            self._timer.set_result(None)  # a shorter lease than the one it sleeps for: wake it now

    def discard(self, adm: Admission) -> None:
        """Stop renewing: the request settled or released its hold."""
        self.live.pop(adm.request_id, None)

    def close(self) -> None:
        self.live.clear()
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        live = self.live
        while live:
            now = time.monotonic()
            due = [(rid, e) for rid, e in live.items() if e[3] <= now]
            for rid, (acct, adm, every, _) in due:
                live[rid] = (acct, adm, every, now + every)
            if due:
                kept = await asyncio.gather(*(self._renew(e[0], e[1]) for _, e in due))
                for (rid, e), ok in zip(due, kept):
                    cur = live.get(rid)
                    if not ok and cur is not None and cur[1] is e[1]:
                        del live[rid]  # settled or released meanwhile: nothing left to renew
            if live:
                self._wake = min(e[3] for e in live.values())
                timer = self._timer = loop.create_future()
                handle = loop.call_later(max(self._wake - time.monotonic(), 0.0), _wake_up, timer)
                try:
                    await timer
                finally:
                    handle.cancel()
                    self._timer = None
        self.task = None

    @staticmethod
    async def _renew(acct: Any, adm: Admission) -> bool:
        try:
            return bool(await acct.renew(adm))
        except Exception:  # renewal is best effort; the next tick tries again
            log.exception("renewing the hold of %s failed", adm.request_id)
            return True


def _wake_up(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
