"""Prometheus metrics: per-process event counters plus budget gauges read from Redis at scrape time.

Under `triage serve --workers N` every worker writes its counters to files in
PROMETHEUS_MULTIPROC_DIR (set by the CLI before the workers start) and a scrape
of any worker aggregates them all. Budget gauges never come from process memory:
they are read from the same Redis hashes admission reads, so every worker and
every replica reports the same value, and a restart cannot reset them to the
full budget.

Hot path: one dict lookup and a few float additions into plain lists per
request; those are folded into prometheus_client's children at each scrape
(and, under several workers, every 100 ms), so a request pays no locks and
no label lookups. Buckets use `le` semantics (bisect_left), as observe() does.
"""

from __future__ import annotations

import logging
import math
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from accounting import LedgerRecord
from router.observe.settings import MetricsSpec

log = logging.getLogger("triage.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
REFUSAL_REASONS = ("budget_exceeded", "max_cost_per_query", "accounting_unavailable")
CLASSIFIER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _status_class(status: str) -> str:
    """Bounded label values: 'ok', 'cancelled', 'error:<kind>' are kept; anything else is 'error'."""
    if status in ("ok", "cancelled") or status.startswith("error:") or status.startswith("refused"):
        return status[:40]
    return "error"


class Metrics:
    def __init__(self, spec: MetricsSpec):
        if spec.bearer_token is None and os.environ.get("TRIAGE_METRICS_TOKEN"):
            spec = spec.model_copy(update={"bearer_token": os.environ["TRIAGE_METRICS_TOKEN"]})
        self.spec = spec
        # A private registry: tests build many apps in one process, and the global one would refuse duplicates.
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("triage_requests", "Requests served, by tier, answering model and outcome.",
                                ("tier", "model", "status"), registry=r)
        self.latency = Histogram("triage_request_duration_seconds", "Whole-request latency in the proxy.",
                                 ("tier", "model", "status"), buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("triage_time_to_first_token_seconds", "Time to the first streamed token.",
                              ("tier", "model"), buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Counter("triage_upstream_calls", "Upstream calls, by model, hop and outcome.",
                                ("model", "hop", "status"), registry=r)
        self.retries = Counter("triage_upstream_retries", "Upstream calls that were a retry.", ("model",), registry=r)
        self.fallbacks = Counter("triage_upstream_fallbacks", "Upstream calls that fell back to another model.",
                                 ("model",), registry=r)
        self.classifier = Histogram("triage_classifier_duration_seconds", "Complexity classification time.",
                                    buckets=CLASSIFIER_BUCKETS, registry=r)
        self.cost = Counter("triage_cost_usd", "Settled cost in US dollars, by tier and model.", ("tier", "model"),
                            registry=r)
        self.counterfactual = Counter("triage_counterfactual_cost_usd",
                                      "What the same requests would have cost on the top tier (estimated).",
                                      ("tier", "model"), registry=r)
        self.savings = Counter("triage_savings_usd", "Counterfactual minus actual cost (estimated savings).",
                               ("tier", "model"), registry=r)
        self.tokens = Counter("triage_tokens", "Tokens billed, by tier, model and kind.", ("tier", "model", "kind"),
                              registry=r)
        self.refusals = Counter("triage_refusals", "Requests refused before any upstream call, by reason.",
                                ("reason",), registry=r)
        self.shadow_runs = Counter("triage_shadow_runs", "Shadow evaluations recorded (sampled second answers).",
                                   ("served_tier", "shadow_tier"), registry=r)
        self.shadow_cost = Counter("triage_shadow_cost_usd", "Evaluation spend (shadow answers and judge calls).",
                                   ("shadow_tier",), registry=r)
        self.tenant_cost = self.tenant_requests = None
        if spec.tenant_labels or spec.key_labels:
            labels = ("tenant", "key_id") if spec.key_labels else ("tenant",)
            self.tenant_cost = Counter("triage_tenant_cost_usd", "Settled cost by tenant (optional labels).", labels,
                                       registry=r)
            self.tenant_requests = Counter("triage_tenant_requests", "Requests by tenant (optional labels).",
                                           labels, registry=r)
        # Plain accumulators, folded into the prometheus_client children by flush(): a request then
        # costs a few list additions instead of a dozen locked inc() calls.
        self._req: dict[tuple[str, str, str], list[Any]] = {}
        self._calls: dict[tuple[str, str, str], int] = {}
        self._refused: dict[str, int] = {}
        self._shadow: dict[tuple[str, str], list[float]] = {}
        self._tenant: dict[tuple[str, ...], list[float]] = {}
        self._clf: list[Any] = [0.0, [0] * (len(CLASSIFIER_BUCKETS) + 1)]
        self._flusher: Any = None

    def declare(self, models: list[str]) -> None:
        """Create the zero series up front, so rate() and alert rules see them before the first event."""
        for m in models:
            self.retries.labels(m)
            self.fallbacks.labels(m)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)

    # -- hot path -------------------------------------------------------------------------------

    def observe_request(self, rec: LedgerRecord) -> None:
        """One settled (or released) request; call after settle, which fills in cost and counterfactual."""
        st = rec.status
        key = (rec.tier, rec.model, st if st == "ok" else _status_class(st))
        a = self._req.get(key)
        if a is None:
            a = self._req[key] = _new_req()
        c = rec.cost_usd or 0.0
        f = rec.counterfactual_cost_usd if rec.counterfactual_cost_usd is not None else c
        a[0] += 1
        if c > 0:
            a[1] += c
        if f > 0:
            a[2] += f
        if f > c:
            a[3] += f - c  # a Counter cannot go down; a request dearer than the top tier saves nothing
        calls = self._calls
        for call in rec.calls:
            a[4] += call.prompt_tokens
            a[5] += call.completion_tokens
            a[6] += call.cached_tokens
            a[7] += call.reasoning_tokens
            ck = (call.model, call.hop, call.status if call.status in ("ok", "cancelled") else "error")
            calls[ck] = calls.get(ck, 0) + 1
        if rec.latency_ms is not None:
            s = rec.latency_ms / 1000
            a[8] += s
            a[9][bisect_left(LATENCY_BUCKETS, s)] += 1
        if rec.ttft_ms is not None:
            s = rec.ttft_ms / 1000
            a[10] += s
            a[11][bisect_left(LATENCY_BUCKETS, s)] += 1
        if self.tenant_cost is not None:
            tk = (rec.tenant, rec.key_id) if self.spec.key_labels else (rec.tenant,)
            t = self._tenant.get(tk)
            if t is None:
                t = self._tenant[tk] = [0, 0.0]
            t[0] += 1
            t[1] += c

    def observe_refusal(self, reason: str) -> None:
        self._refused[reason] = self._refused.get(reason, 0) + 1

    def observe_evaluation(self, rec: LedgerRecord) -> None:
        """One shadow evaluation row (accounting's record_evaluation), off the request path."""
        ev = rec.evaluation or {}
        key = (str(ev.get("served_tier") or "-"), str(ev.get("shadow_tier") or "-"))
        a = self._shadow.get(key)
        if a is None:
            a = self._shadow[key] = [0, 0.0]
        a[0] += 1
        a[1] += rec.cost_usd or 0.0

    def observe_classifier(self, seconds: float) -> None:
        c = self._clf
        c[0] += seconds
        c[1][bisect_left(CLASSIFIER_BUCKETS, seconds)] += 1

    # -- folding into prometheus_client ---------------------------------------------------------

    def flush(self) -> None:
        """Move what was observed since the last flush into the registry (or the multiprocess files).

        Runs on the event loop, like the observers, so nothing is lost between read and reset.
        """
        req, self._req = self._req, {}
        for (tier, model, status), a in req.items():
            if a[0]:
                self.requests.labels(tier, model, status).inc(a[0])
            for ctr, v in ((self.cost, a[1]), (self.counterfactual, a[2]), (self.savings, a[3])):
                if v:
                    ctr.labels(tier, model).inc(v)
            for kind, v in zip(("prompt", "completion", "cached", "reasoning"), a[4:8]):
                if v:
                    self.tokens.labels(tier, model, kind).inc(v)
            if any(a[9]):
                _add_hist(self.latency.labels(tier, model, status), a[8], a[9])
            if any(a[11]):
                _add_hist(self.ttft.labels(tier, model), a[10], a[11])
        calls, self._calls = self._calls, {}
        for (model, hop, status), n in calls.items():
            self.upstream.labels(model, hop, status).inc(n)
            if hop == "retry":
                self.retries.labels(model).inc(n)
            elif hop == "fallback":
                self.fallbacks.labels(model).inc(n)
        refused, self._refused = self._refused, {}
        for reason, n in refused.items():
            self.refusals.labels(reason).inc(n)
        clf, self._clf = self._clf, [0.0, [0] * (len(CLASSIFIER_BUCKETS) + 1)]
        if any(clf[1]):
            _add_hist(self.classifier, clf[0], clf[1])
        shadow, self._shadow = self._shadow, {}
        for (served, shadow_tier), (runs, c) in shadow.items():
            self.shadow_runs.labels(served, shadow_tier).inc(runs)
            if c:
                self.shadow_cost.labels(shadow_tier).inc(c)
        tenant, self._tenant = self._tenant, {}
        for labels, (requests, c) in tenant.items():
            self.tenant_requests.labels(*labels).inc(requests)  # type: ignore[union-attr]
            if c:
                self.tenant_cost.labels(*labels).inc(c)  # type: ignore[union-attr]

    def start_flusher(self, interval_s: float = 0.1) -> None:
        """Under several workers a scrape reads every worker's files, so each worker flushes on its own."""
        import asyncio  # noqa: PLC0415

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    self.flush()
                except Exception:  # a metrics bug must not stop the worker's flushing for good
                    log.exception("metrics flush failed")

        self._flusher = asyncio.get_running_loop().create_task(loop())

    def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()

    # -- scrape ---------------------------------------------------------------------------------

    def _process_registry(self) -> CollectorRegistry:
        d = multiprocess_dir()
        if not d:
            return self.registry
        from prometheus_client import multiprocess  # noqa: PLC0415 - only in multi-worker mode

        reg = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(reg, path=d)
        return reg

    async def render(self, budgets: list[dict[str, Any]] | None) -> bytes:
        """The exposition: this process's (or all workers') counters, then budget gauges from Redis.

        ``budgets`` is BudgetStore.show() output, or None when Redis did not answer: then the
        gauges are left out for this scrape (Prometheus marks them stale) rather than reported
        as zero or as the full limit.
        """
        self.flush()
        out = generate_latest(self._process_registry())
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(_BudgetCollector((budgets or []) if self.spec.budget_gauges else [], budgets is not None))
        return out + generate_latest(gauges)


def _new_req() -> list[Any]:
    # n, cost, counterfactual, savings, prompt, completion, cached, reasoning tokens,
    # latency sum, latency bucket counts, ttft sum, ttft bucket counts
    return [0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1), 0.0,
            [0] * (len(LATENCY_BUCKETS) + 1)]


def _add_hist(child: Any, total: float, counts: list[int]) -> None:
    """Add pre-bucketed observations to a histogram child (per-bucket counts, like observe() keeps them)."""
    child._sum.inc(total)
    for i, n in enumerate(counts):
        if n:
            child._buckets[i].inc(n)


def _finite(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


class _BudgetCollector:
    def __init__(self, budgets: list[dict[str, Any]], redis_up: bool):
        self.budgets = budgets
        self.redis_up = redis_up

    def collect(self) -> Any:
        up = GaugeMetricFamily("triage_accounting_up", "1 if the budget store answered this scrape.")
        up.add_metric([], 1.0 if self.redis_up else 0.0)
        yield up
        if not self.redis_up:
            return
        labels = ["scope", "period", "mode"]
        fams = {
            "limit": GaugeMetricFamily("triage_budget_limit_usd", "Budget limit for the current period.", labels=labels),
            "spent": GaugeMetricFamily("triage_budget_spent_usd", "Settled spend in the current period.", labels=labels),
            "held": GaugeMetricFamily("triage_budget_held_usd", "Reserved by requests in flight.", labels=labels),
            "remaining": GaugeMetricFamily("triage_budget_remaining_usd",
                                           "Limit minus spent minus held, floored at 0.", labels=labels),
        }
        for b in self.budgets:
            lv = [b["scope"], b["period"], b["mode"]]
            limit, spent, held = _finite(b["limit_usd"]), _finite(b["spent_usd"]), _finite(b["reserved_usd"])
            fams["limit"].add_metric(lv, limit)
            fams["spent"].add_metric(lv, spent)
            fams["held"].add_metric(lv, held)
            fams["remaining"].add_metric(lv, max(0.0, limit - spent - held))
        yield from fams.values()
