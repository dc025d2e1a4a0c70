"""The `observability:` section of the config (metrics, tracing, alerts, dashboard)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MetricsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # If set, /metrics wants `Authorization: Bearer <token>` (TRIAGE_METRICS_TOKEN also sets it).
    bearer_token: str | None = Field(default=None, repr=False)
    # Per-tenant / per-key series multiply cardinality by the number of tenants/keys: off by default.
    tenant_labels: bool = False
    key_labels: bool = False
    # Budget gauges (limit, spent, held, remaining) read from Redis at scrape time, one series per policy.
    budget_gauges: bool = True


class TracingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    # OTLP/HTTP traces endpoint; None = the exporter's own default / OTEL_EXPORTER_OTLP_* env.
    endpoint: str | None = None
    service_name: str = "triage"
    headers: dict[str, str] = Field(default_factory=dict, repr=False)


class AlertsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_url: str | None = None
    format: Literal["generic", "slack"] = "generic"
    # How often each worker re-checks budgets (it also checks soon after a request crosses a soft limit).
    interval_s: float = Field(default=60.0, gt=0)
    # Alert when the spend rate since the period start would exhaust the budget before the period ends.
    projection: bool = True
    # Do not project from less than this share of the period (the first minutes of a day say little).
    projection_min_elapsed: float = Field(default=0.05, ge=0, le=1)
    timeout_s: float = Field(default=5.0, gt=0)


class ObservabilitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    tracing: TracingSpec = Field(default_factory=TracingSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    ui: bool = True  # serve the dashboard at /ui
