"""Budget alerts by webhook: soft limit crossed, budget exhausted, projected to run out early.

Every worker checks every budget periodically (and soon after a request reports
a soft-limit warning); a Redis `SET NX` on a key named for the crossing (kind,
scope, period, limit) makes exactly one of them send it. A failed delivery
deletes the key again, so the next check retries instead of staying silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from accounting import redis_keys as rk
from accounting.budgets import BudgetStore, period_field
from accounting.models import to_nusd
from accounting.review import period_bounds, projection
from router.observe.settings import AlertsSpec

log = logging.getLogger("triage.alerts")

KINDS = ("soft_limit", "exhausted", "projected")


def crossings(b: dict[str, Any], now: datetime, spec: AlertsSpec, refused: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """Which alert kinds this budget's state calls for now, each with its details.

    A hard budget stops admitting before its spend reaches the limit (the next request's
    worst case does not fit), so it also counts as exhausted once it ``refused`` a request.
    """
    limit, spent, held = b["limit_usd"], b["spent_usd"], b["reserved_usd"]
    out: list[tuple[str, dict[str, Any]]] = []
    if limit <= 0:
        return out
    pct = 100.0 * spent / limit
    if spent >= limit:
        out.append(("exhausted", {}))
    elif refused and b["mode"] == "hard":
        out.append(("exhausted", {"refused_requests": True}))
    elif b.get("soft_pct") and pct >= b["soft_pct"]:
        out.append(("soft_limit", {"soft_pct": b["soft_pct"]}))
    exhausted = bool(out) and out[0][0] == "exhausted"
    if spec.projection and not exhausted:
        pr = projection(limit, spent, b["period"], now, spec.projection_min_elapsed)
        if pr["exhausts_early"]:
            out.append(("projected", {"projected_usd": pr["projected_usd"], "run_out_at": pr["run_out_at"],
                                      "period_end": pr["period_end"]}))
    for _, d in out:
        d.update(spent_usd=spent, held_usd=held, limit_usd=limit, pct=round(pct, 2),
                 remaining_usd=max(0.0, limit - spent - held))
    return out


def _text(kind: str, b: dict[str, Any], d: dict[str, Any]) -> str:
    head = {"soft_limit": f"Budget {b['scope']} passed its soft limit ({d.get('soft_pct')}%)",
            "exhausted": f"Budget {b['scope']} is exhausted" + (
                " (it now refuses requests)" if d.get("refused_requests") else ""),
            "projected": f"Budget {b['scope']} will run out before the {b['period']} ends"}[kind]
    body = f"${d['spent_usd']:.4f} of ${d['limit_usd']:.2f} spent this {b['period']} ({d['pct']:.1f}%)"
    if kind == "projected":
        body += f"; at the current rate it runs out at {d['run_out_at']} (projected ${d['projected_usd']:.2f})"
    return f"{head}: {body}."


def payload(kind: str, b: dict[str, Any], d: dict[str, Any], fmt: str, now: datetime) -> dict[str, Any]:
    text = _text(kind, b, d)
    if fmt == "slack":
        emoji = {"soft_limit": ":warning:", "exhausted": ":no_entry:", "projected": ":chart_with_upwards_trend:"}[kind]
        return {"text": f"{emoji} {text}",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *Triage* {text}"}}]}
    return {"event": f"budget.{kind}", "scope": b["scope"], "period": b["period"], "mode": b["mode"],
            "at": now.isoformat(timespec="seconds"), "text": text, **d}


class BudgetAlerts:
    def __init__(self, spec: AlertsSpec, redis: Redis):
        self.spec = spec
        self.redis = redis
        self.store = BudgetStore(redis)
        self._wake = asyncio.Event()
        self._refused: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.sent = 0

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.spec.timeout_s)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        """A request saw a soft warning: check soon rather than at the next interval."""
        self._wake.set()

    def refused(self, scope: str) -> None:
        """Admission refused a request on ``scope``: a hard budget that does that is exhausted."""
        self._refused.add(scope)
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.spec.interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
            except (RedisError, OSError, TimeoutError) as e:
                log.warning("budget alert check skipped: %s", type(e).__name__)
            except Exception:  # an alert bug must not stop the loop for good
                log.exception("budget alert check failed")

    async def check(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Send whatever crossings no worker has sent yet; returns what this call sent."""
        now = now or datetime.now(timezone.utc)
        sent = []
        refused, self._refused = self._refused, set()
        for b in await self.store.show():
            for kind, d in crossings(b, now, self.spec, b["scope"] in refused):
                pf = period_field(b["period"], now)
                key = rk.alert_sent(kind, b["scope"], pf, to_nusd(b["limit_usd"]))
                _, end = period_bounds(b["period"], now)
                ttl = int((end - now).total_seconds()) + 86400 if end else 400 * 86400
                if not await self.redis.set(key, str(int(time.time())), nx=True, ex=ttl):
                    continue  # another worker (or an earlier check) already sent this crossing
                body = payload(kind, b, d, self.spec.format, now)
                if await self._deliver(body):
                    sent.append(body)
                    self.sent += 1
                else:
                    await self.redis.delete(key)
        return sent

    async def _deliver(self, body: dict[str, Any]) -> bool:
        if not self.spec.webhook_url or self._client is None:
            return False
        try:
            r = await self._client.post(self.spec.webhook_url, json=body)
        except httpx.HTTPError as e:
            log.warning("budget alert webhook failed: %s", type(e).__name__)
            return False
        if r.status_code >= 300:
            log.warning("budget alert webhook answered %s", r.status_code)
            return False
        return True
