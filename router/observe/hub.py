"""The one object the request path talks to for metrics, traces and alerts.

`finished` and `refused` are the only per-request calls; each part they fan out
to is None when switched off, so a disabled part costs one attribute test.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from accounting import Admission, LedgerRecord
from router.observe.settings import ObservabilitySpec

if TYPE_CHECKING:
    from accounting import Accountant
    from router.observe.alerts import BudgetAlerts
    from router.observe.metrics import Metrics
    from router.observe.tracing import Tracer

log = logging.getLogger("triage.observe")


class Observability:
    __slots__ = ("spec", "metrics", "tracer", "alerts", "providers")

    def __init__(self, spec: ObservabilitySpec, metrics: "Metrics | None" = None, tracer: "Tracer | None" = None,
                 alerts: "BudgetAlerts | None" = None):
        self.spec = spec
        self.metrics = metrics
        self.tracer = tracer
        self.alerts = alerts
        self.providers: dict[str, str] = {}  # model_name -> provider, for gen_ai.provider.name

    @classmethod
    def start(cls, spec: ObservabilitySpec, accountant: "Accountant", tracer_provider: Any = None) -> "Observability":
        metrics = tracer = alerts = None
        if spec.metrics.enabled:
            from router.observe.metrics import Metrics, multiprocess_dir  # noqa: PLC0415

            metrics = Metrics(spec.metrics)
            if multiprocess_dir():
                metrics.start_flusher()
        if spec.tracing.enabled or tracer_provider is not None:
            try:
                from router.observe.tracing import Tracer  # noqa: PLC0415

                tracer = Tracer(spec.tracing, tracer_provider)
            except ImportError:
                log.warning("tracing is enabled but OpenTelemetry is not installed: pip install 'triage-gateway[otel]'")
        if spec.alerts.webhook_url:
            from router.observe.alerts import BudgetAlerts  # noqa: PLC0415

            alerts = BudgetAlerts(spec.alerts, accountant.redis)
            alerts.start()
        return cls(spec, metrics, tracer, alerts)

    def finished(self, rec: LedgerRecord, adm: Admission, t0: float) -> None:
        """After settle/release: the record then carries the cost and counterfactual settle computed."""
        try:
            if self.metrics is not None:
                self.metrics.observe_request(rec)
            if self.tracer is not None:
                outcome = "failed_open" if adm.failed_open else ("soft_warning" if adm.soft_warnings else "admitted")
                self.tracer.request(rec, t0, outcome, self.providers)
            if self.alerts is not None and adm.soft_warnings:
                self.alerts.poke()
        except Exception:  # observing must never fail a request
            log.exception("observing request %s failed", rec.request_id)

    def refused(self, reason: str, request_id: str, tenant: str, key_id: str, model: str, t0: float,
                scope: str | None = None) -> None:
        try:
            if self.metrics is not None:
                self.metrics.observe_refusal(reason)
            if self.tracer is not None:
                self.tracer.refusal(request_id, tenant, key_id, model, reason, t0)
            if self.alerts is not None and reason == "budget_exceeded":
                if scope:
                    self.alerts.refused(scope)
                else:
                    self.alerts.poke()
        except Exception:
            log.exception("observing refusal of %s failed", request_id)

    def evaluated(self, rec: LedgerRecord) -> None:
        """A shadow evaluation was recorded (router/shadow.py calls this after record_evaluation)."""
        try:
            if self.metrics is not None:
                self.metrics.observe_evaluation(rec)
        except Exception:
            log.exception("observing evaluation %s failed", rec.request_id)

    def classified(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_classifier(seconds)

    async def close(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self.alerts is not None:
            await self.alerts.close()
        if self.tracer is not None:
            self.tracer.shutdown()
