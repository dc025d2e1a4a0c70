"""Prometheus metrics: per-process event counters plus budget gauges read from Redis at scrape time.

Under `triage serve --workers N` every worker writes its counters to files in
PROMETHEUS_MULTIPROC_DIR (set by the CLI before the workers start) and a scrape
of any worker aggregates them all. Budget gauges never come from process memory:
they are read from the same Redis hashes admission reads, so every worker and
every replica reports the same value, and a restart cannot reset them to the
full budget.

Hot path: one dict lookup for a cached tuple of label children per
(tier, model, status), then a few `inc`/`observe` calls; no label dicts.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from accounting import LedgerRecord
from router.observe.settings import MetricsSpec

log = logging.getLogger("triage.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
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
        self.tenant_cost = self.tenant_requests = None
        if spec.tenant_labels or spec.key_labels:
            labels = ("tenant", "key_id") if spec.key_labels else ("tenant",)
            self.tenant_cost = Counter("triage_tenant_cost_usd", "Settled cost by tenant (optional labels).", labels,
                                       registry=r)
            self.tenant_requests = Counter("triage_tenant_requests", "Requests by tenant (optional labels).",
                                           labels, registry=r)
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self._calls: dict[tuple[str, str, str], Any] = {}
        self._refusals: dict[str, Any] = {}
        self._classify = self.classifier  # no labels: the metric is its own child

    # -- hot path -------------------------------------------------------------------------------

    def _req_children(self, tier: str, model: str, status: str) -> tuple[Any, ...]:
        key = (tier, model, status)
        ch = self._children.get(key)
        if ch is None:
            ch = (self.requests.labels(tier, model, status), self.latency.labels(tier, model, status),
                  self.ttft.labels(tier, model), self.cost.labels(tier, model),
                  self.counterfactual.labels(tier, model), self.savings.labels(tier, model),
                  self.tokens.labels(tier, model, "prompt"), self.tokens.labels(tier, model, "completion"),
                  self.tokens.labels(tier, model, "cached"), self.tokens.labels(tier, model, "reasoning"))
            self._children[key] = ch
        return ch

    def observe_request(self, rec: LedgerRecord) -> None:
        """One settled (or released) request; call after settle, which fills in cost and counterfactual."""
        status = _status_class(rec.status)
        n, lat, ttft, cost, cf, sav, t_p, t_c, t_cached, t_r = self._req_children(rec.tier, rec.model, status)
        n.inc()
        if rec.latency_ms is not None:
            lat.observe(rec.latency_ms / 1000)
        if rec.ttft_ms is not None:
            ttft.observe(rec.ttft_ms / 1000)
        c = rec.cost_usd or 0.0
        f = rec.counterfactual_cost_usd if rec.counterfactual_cost_usd is not None else c
        if c > 0:
            cost.inc(c)
        if f > 0:
            cf.inc(f)
        if f > c:
            sav.inc(f - c)  # a Counter cannot go down; a request dearer than the top tier saves nothing
        pt = ct = cached = rt = 0
        for call in rec.calls:
            pt += call.prompt_tokens
            ct += call.completion_tokens
            cached += call.cached_tokens
            rt += call.reasoning_tokens
            key = (call.model, call.hop, call.status if call.status in ("ok", "cancelled") else "error")
            u = self._calls.get(key)
            if u is None:
                u = self._calls[key] = self.upstream.labels(*key)
            u.inc()
            if call.hop == "retry":
                self.retries.labels(call.model).inc()
            elif call.hop == "fallback":
                self.fallbacks.labels(call.model).inc()
        if pt:
            t_p.inc(pt)
        if ct:
            t_c.inc(ct)
        if cached:
            t_cached.inc(cached)
        if rt:
            t_r.inc(rt)
        if self.tenant_cost is not None:
            labels = (rec.tenant, rec.key_id) if self.spec.key_labels else (rec.tenant,)
            self.tenant_requests.labels(*labels).inc()  # type: ignore[union-attr]
            if c > 0:
                self.tenant_cost.labels(*labels).inc(c)

    def observe_refusal(self, reason: str) -> None:
        ch = self._refusals.get(reason)
        if ch is None:
            ch = self._refusals[reason] = self.refusals.labels(reason)
        ch.inc()

    def observe_classifier(self, seconds: float) -> None:
        self._classify.observe(seconds)

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
        out = generate_latest(self._process_registry())
        gauges = CollectorRegistry(auto_describe=False)
        gauges.register(_BudgetCollector(budgets if self.spec.budget_gauges else [], budgets is not None))
        return out + generate_latest(gauges)


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
