"""OpenTelemetry traces (extra `[otel]`): one span per request, one child span per upstream call.

Spans are written when the request is settled, from what the ledger record
holds, with their real start times: nothing runs per request while a request
is in flight, and nothing at all when tracing is off (the module is not even
imported then). Attribute names follow the OpenTelemetry GenAI semantic
conventions (`gen_ai.*`); Triage's own decision and budget attributes live
under `triage.*`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from accounting import LedgerRecord
from router.observe.settings import TracingSpec

log = logging.getLogger("triage.tracing")


def _ns(perf_s: float, perf_now: float, wall_now_ns: int) -> int:
    """A perf_counter reading as wall-clock nanoseconds (spans need epoch times)."""
    return wall_now_ns - int((perf_now - perf_s) * 1e9)


class Tracer:
    def __init__(self, spec: TracingSpec, provider: Any = None):
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - optional extra
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        self._kind_client = SpanKind.CLIENT
        self._kind_server = SpanKind.SERVER
        self._status_error = Status(StatusCode.ERROR)
        self._own_provider = provider is None
        if provider is None:
            provider = TracerProvider(resource=Resource.create({"service.name": spec.service_name}))
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

            kw: dict[str, Any] = {"headers": spec.headers or None}
            if spec.endpoint:
                kw["endpoint"] = spec.endpoint
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(**kw)))
        self.provider = provider
        self.tracer = provider.get_tracer("triage")

    def request(self, rec: LedgerRecord, t0_perf: float, budget_outcome: str, providers: dict[str, str]) -> None:
        perf_now, wall_now = time.perf_counter(), time.time_ns()
        start = _ns(t0_perf, perf_now, wall_now)
        end = wall_now
        usage = rec.total_usage()
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": rec.virtual_model or rec.model,
            "gen_ai.response.model": rec.model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "triage.request_id": rec.request_id,
            "triage.tenant": rec.tenant,
            "triage.key_id": rec.key_id,
            "triage.tier": rec.tier,
            "triage.status": rec.status,
            "triage.decision.reason": rec.reason[:256],
            "triage.cost_usd": float(rec.cost_usd or 0.0),
            "triage.counterfactual_cost_usd": float(rec.counterfactual_cost_usd or 0.0),
            "triage.budget.outcome": budget_outcome,
            "triage.streamed": rec.streamed,
        }
        if rec.complexity is not None:
            attrs["triage.complexity"] = float(rec.complexity)
        if rec.ttft_ms is not None:
            attrs["triage.ttft_ms"] = float(rec.ttft_ms)
        if usage.cached_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
        if usage.reasoning_tokens:
            attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        span = self.tracer.start_span(f"chat {rec.virtual_model or rec.model}", kind=self._kind_server,
                                      start_time=start, attributes=attrs)
        if rec.status != "ok":
            span.set_status(self._status_error)
        from opentelemetry.trace import set_span_in_context  # noqa: PLC0415 - cached module after first call

        ctx = set_span_in_context(span)
        # Calls carry a duration, not a start: primaries (and deliberate agents, which run together)
        # start with the request; a retry or fallback starts when the previous attempt ended.
        cursor = start
        for call in rec.calls:
            dur = int((call.latency_ms or 0.0) * 1e6)
            c_start = cursor if call.hop != "primary" else start
            c_end = min(c_start + dur, end)
            cursor = max(cursor, c_end)
            child = self.tracer.start_span(
                f"chat {call.model}", context=ctx, kind=self._kind_client, start_time=c_start,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": providers.get(call.model, "openai"),
                    "gen_ai.request.model": call.model,
                    "gen_ai.response.model": call.model,
                    "gen_ai.usage.input_tokens": call.prompt_tokens,
                    "gen_ai.usage.output_tokens": call.completion_tokens,
                    "triage.hop": call.hop,
                    "triage.status": call.status,
                    "triage.cost_usd": float(call.cost_usd),
                    "triage.estimated_usage": call.estimated,
                })
            if call.status not in ("ok", "cancelled"):
                child.set_status(self._status_error)
            child.end(end_time=c_end)
        span.end(end_time=end)

    def refusal(self, request_id: str, tenant: str, key_id: str, model: str, reason: str, t0_perf: float) -> None:
        perf_now, wall_now = time.perf_counter(), time.time_ns()
        span = self.tracer.start_span(f"chat {model}", kind=self._kind_server,
                                      start_time=_ns(t0_perf, perf_now, wall_now), attributes={
                                          "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                          "triage.request_id": request_id, "triage.tenant": tenant,
                                          "triage.key_id": key_id, "triage.budget.outcome": "refused",
                                          "triage.refusal.reason": reason, "triage.cost_usd": 0.0,
                                      })
        span.set_status(self._status_error)
        span.end(end_time=wall_now)

    def shutdown(self) -> None:
        if self._own_provider:
            try:
                self.provider.shutdown()
            except Exception:  # exporter unreachable at exit: nothing more to do
                log.warning("tracer shutdown failed", exc_info=True)
