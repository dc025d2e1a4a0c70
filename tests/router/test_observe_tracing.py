"""OpenTelemetry spans (in-memory exporter): one per request with decision/cost/budget, one child per upstream call."""

from __future__ import annotations

import pytest

from tests.router.conftest import Proxy
from tests.router.observe_seed import EASY, HARD

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk not installed (extra [otel])")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from router.observe.settings import TracingSpec  # noqa: E402
from router.observe.tracing import Tracer  # noqa: E402


def test_tracing_off_by_default(proxy: Proxy) -> None:
    assert proxy.state.obs.tracer is None


def test_spans_per_request_and_upstream_call(proxy: Proxy) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    proxy.state.obs.tracer = Tracer(TracingSpec(enabled=True), provider)
    key = proxy.create_key("acme", budget_usd=10)
    c = proxy.client(key)
    raw = c.chat.completions.with_raw_response.create(model="triage/deliberate",
                                                       messages=[{"role": "user", "content": HARD}], max_tokens=64)
    rid = raw.headers["x-request-id"]
    rec = proxy.admin("GET", "/ui/api/requests/" + rid).json()
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.attributes.get("triage.request_id") == rid)
    children = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
    assert len(children) == len(rec["calls"]) >= 3
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "triage/deliberate"
    assert a["triage.tier"] == "deliberate" and a["triage.tenant"] == "acme"
    assert a["triage.cost_usd"] == pytest.approx(rec["cost_usd"])
    assert a["triage.budget.outcome"] == "admitted"
    assert a["gen_ai.usage.input_tokens"] == sum(x["prompt_tokens"] for x in rec["calls"])
    for ch in children:
        assert ch.attributes["gen_ai.request.model"] in {"big"}
        assert ch.start_time >= root.start_time and ch.end_time <= root.end_time
    assert sum(ch.attributes["triage.cost_usd"] for ch in children) == pytest.approx(rec["cost_usd"])
    # a refusal is a span too, with its reason
    poor = proxy.create_key("acme", budget_usd=0.0000001, period="day")
    with pytest.raises(Exception):
        proxy.client(poor).chat.completions.create(model="triage/auto", messages=[{"role": "user", "content": EASY}])
    refused = [s for s in exporter.get_finished_spans() if s.attributes.get("triage.budget.outcome") == "refused"]
    assert len(refused) == 1 and refused[0].attributes["triage.refusal.reason"] == "budget_exceeded"
