"""OpenTelemetry spans (in-memory exporter): one per request with decision/cost/budget, one child per upstream call."""

from __future__ import annotations

import openai
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
    with pytest.raises(openai.APIStatusError):
        proxy.client(poor).chat.completions.create(model="triage/auto", messages=[{"role": "user", "content": EASY}])
    refused = [s for s in exporter.get_finished_spans() if s.attributes.get("triage.budget.outcome") == "refused"]
    assert len(refused) == 1 and refused[0].attributes["triage.refusal.reason"] == "budget_exceeded"


def test_otlp_export_reaches_a_collector(tmp_path, redis_url, mock_upstream) -> None:
    """The configured path: tracing.enabled + endpoint, real OTLP/HTTP exporter, a local receiver decoding protobuf."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="extra [otel] not installed")
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import yaml
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.router.conftest import MASTER, make_config, start_proxy

    got: list[ExportTraceServiceRequest] = []
    cond = threading.Condition()

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            req = ExportTraceServiceRequest()
            req.ParseFromString(self.rfile.read(int(self.headers["content-length"])))
            with cond:
                got.append(req)
                cond.notify_all()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *a) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = make_config(mock_upstream.base_url, redis_url, observability={"tracing": {
        "enabled": True, "endpoint": f"http://127.0.0.1:{srv.server_address[1]}/v1/traces", "service_name": "triage-test"}})
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        p = Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url,
                  server=server)
        key = p.create_key("acme")
        raw = p.client(key).chat.completions.with_raw_response.create(
            model="triage/fast", messages=[{"role": "user", "content": EASY}])
        rid = raw.headers["x-request-id"]
    finally:
        server.should_exit = True  # shutdown flushes the batch processor
        thread.join(15)
    with cond:
        assert cond.wait_for(lambda: any(
            a.key == "triage.request_id" and a.value.string_value == rid
            for r in got for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans for a in s.attributes), 20)
    spans = [s for r in got for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    res = {a.key: a.value.string_value for r in got for rs in r.resource_spans for a in rs.resource.attributes}
    assert res["service.name"] == "triage-test"
    root_span = next(s for s in spans if any(a.key == "triage.request_id" for a in s.attributes))
    attrs = {a.key: a.value for a in root_span.attributes}
    assert attrs["triage.tier"].string_value == "fast" and attrs["triage.cost_usd"].double_value > 0
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    kids = [s for s in spans if s.parent_span_id == root_span.span_id]
    assert len(kids) == 1 and kids[0].trace_id == root_span.trace_id
    srv.shutdown()
