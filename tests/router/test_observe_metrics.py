"""/metrics: counters agree with the ledger, budget gauges with Redis, token protection, many workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from tests.helpers import wait_ready
from tests.router.conftest import MASTER, Proxy, free_port, make_config, start_proxy
from tests.router.observe_seed import EASY, seed

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in match.items()))


def scrape(root: str, token: str | None = None) -> list[tuple[str, dict[str, str], float]]:
    h = {"authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{root}/metrics", headers=h, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def test_metrics_match_ledger_and_budgets(proxy: Proxy) -> None:
    s = seed(proxy)
    m = scrape(proxy.root_url)
    usage = {t: proxy.admin("GET", "/v1/usage", params={"tenant": t, "since": "1d"}).json() for t in ("acme", "globex")}
    n_ledger = sum(u["totals"]["requests"] for u in usage.values())
    cost_ledger = sum(u["totals"]["cost_usd"] for u in usage.values())
    assert total(m, "triage_requests_total") == n_ledger
    assert total(m, "triage_cost_usd_total") == pytest.approx(cost_ledger, abs=1e-9)
    for t in ("fast", "reasoning", "deliberate"):
        ledger_t = sum(r["cost_usd"] for u in usage.values() for r in u["by_tier"] if r["tier"] == t)
        assert total(m, "triage_cost_usd_total", tier=t) == pytest.approx(ledger_t, abs=1e-9)
        n_t = sum(r["requests"] for u in usage.values() for r in u["by_tier"] if r["tier"] == t)
        assert total(m, "triage_request_duration_seconds_count", tier=t) == n_t
    cf = sum(u["totals"]["counterfactual_usd"] for u in usage.values())
    assert total(m, "triage_counterfactual_cost_usd_total") == pytest.approx(cf, abs=1e-9)
    assert total(m, "triage_refusals_total", reason="budget_exceeded") == s.refused == 1
    assert total(m, "triage_classifier_duration_seconds_count") == n_ledger + s.refused
    assert total(m, "triage_time_to_first_token_seconds_count") == 2  # one stream per tenant
    assert total(m, "triage_upstream_calls_total") >= n_ledger
    # budget gauges: one series per policy, equal to what admission reads
    budgets = proxy.admin("GET", "/admin/budgets").json()["data"]
    assert total(m, "triage_accounting_up") == 1
    for b in budgets:
        lab = {"scope": b["scope"], "period": b["period"], "mode": b["mode"]}
        assert total(m, "triage_budget_limit_usd", **lab) == pytest.approx(b["limit_usd"])
        assert total(m, "triage_budget_spent_usd", **lab) == pytest.approx(b["spent_usd"], abs=1e-9)
        assert total(m, "triage_budget_remaining_usd", **lab) == pytest.approx(b["remaining_usd"], abs=1e-9)
    for name, lab, v in m:
        assert v == v and v not in (float("inf"), float("-inf")), (name, lab)
        if name.startswith("triage_budget_"):
            assert v >= 0, (name, lab, v)
    # an exhausted budget reads 0 remaining, never negative, +Inf or the full limit
    poor = [b for b in budgets if b["limit_usd"] < 1e-6]
    assert poor and all(total(m, "triage_budget_remaining_usd", scope=b["scope"]) >= 0 for b in poor)
    # no tenant labels unless configured
    assert not any("tenant" in lab for _, lab, _ in m)


@pytest.fixture()
def token_proxy(tmp_path: Path, redis_url: str, mock_upstream) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url, observability={
        "metrics": {"bearer_token": "scrape-secret", "tenant_labels": True}})
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url,
                    server=server)
    finally:
        server.should_exit = True
        thread.join(15)


def test_metrics_token_and_tenant_labels(token_proxy: Proxy) -> None:
    assert httpx.get(f"{token_proxy.root_url}/metrics").status_code == 401
    assert httpx.get(f"{token_proxy.root_url}/metrics", headers={"authorization": "Bearer nope"}).status_code == 401
    key = token_proxy.create_key("acme")
    token_proxy.client(key).chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}])
    m = scrape(token_proxy.root_url, "scrape-secret")
    assert total(m, "triage_tenant_requests_total", tenant="acme") == 1
    assert total(m, "triage_tenant_cost_usd_total", tenant="acme") > 0


@pytest.mark.slow
def test_metrics_aggregate_across_workers(tmp_path: Path, redis_url: str, mock_upstream) -> None:
    """`triage serve --workers 2`: whichever worker answers a scrape reports every worker's requests."""
    cfg = make_config(mock_upstream.base_url, redis_url)
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", TRIAGE_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, proc)
        root = f"http://127.0.0.1:{port}"
        key = httpx.post(f"{root}/admin/keys", json={"tenant": "w"}, headers={"authorization": f"Bearer {MASTER}"}).json()["key"]
        n = 24
        with httpx.Client(base_url=root, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
            for _ in range(n):
                # a fresh connection each time, so the kernel spreads requests over both workers
                r = httpx.post(f"{root}/v1/chat/completions", headers={"authorization": f"Bearer {key}",
                                                                        "connection": "close"},
                               json={"model": "triage/fast", "messages": [{"role": "user", "content": EASY}]})
                assert r.status_code == 200, r.text
            ledger = c.get("/v1/usage", params={"since": "1d"}).json()["totals"]
        assert ledger["requests"] == n
        # each worker folds its counts into the shared files every 100 ms: wait for that
        deadline = time.monotonic() + 20
        while True:
            m = parse(httpx.get(f"{root}/metrics", headers={"connection": "close"}).text)
            if total(m, "triage_requests_total") == n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for _ in range(6):  # from then on every scrape, whichever worker serves it, sees all n
            m = parse(httpx.get(f"{root}/metrics", headers={"connection": "close"}).text)
            assert total(m, "triage_requests_total") == n
            assert total(m, "triage_cost_usd_total") == pytest.approx(ledger["cost_usd"], abs=1e-9)
    finally:
        proc.terminate()
        proc.wait(20)


def test_folded_histograms_equal_prometheus_observe() -> None:
    """The hot path buckets observations itself; the exposition must equal Histogram.observe's."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from accounting import LedgerRecord, UpstreamCall
    from router.observe.metrics import LATENCY_BUCKETS, Metrics
    from router.observe.settings import MetricsSpec

    m = Metrics(MetricsSpec())
    reg = CollectorRegistry()
    ref = Histogram("triage_request_duration_seconds", "x", ("tier", "model", "status"), buckets=LATENCY_BUCKETS,
                    registry=reg)
    lat_ms = [0.0, 1.0, 5.0, 5.0001, 10.0, 250.0, 999.9, 120000.0, 500000.0]
    for i, ms in enumerate(lat_ms):
        m.observe_request(LedgerRecord(request_id=f"r{i}", key_id="k", tenant="t", tier="fast", model="small",
                                       latency_ms=ms, cost_usd=0.5, counterfactual_cost_usd=0.25,
                                       calls=[UpstreamCall(model="small", hop="retry" if i % 2 else "primary")]))
        ref.labels("fast", "small", "ok").observe(ms / 1000)
        if i == 4:
            m.flush()  # folding in two parts changes nothing
    m.flush()
    ours = [ln for ln in generate_latest(m.registry).decode().splitlines()
            if ln.startswith("triage_request_duration_seconds_") and "created" not in ln]
    theirs = [ln for ln in generate_latest(reg).decode().splitlines()
              if ln.startswith("triage_request_duration_seconds_") and "created" not in ln]
    assert ours == theirs and len(ours) == len(LATENCY_BUCKETS) + 3
    s = parse(generate_latest(m.registry).decode())
    assert total(s, "triage_savings_usd_total") == 0  # dearer than the top tier: no negative savings
    assert total(s, "triage_upstream_retries_total") == 4
    assert total(s, "triage_requests_total") == len(lat_ms)


def test_shipped_dashboard_and_alert_rules_name_real_metrics(proxy: Proxy) -> None:
    """Every metric deploy/grafana/triage.json and deploy/prometheus/alerts.yml query exists in /metrics."""
    import json

    seed(proxy)
    exposed = {name for name, _, _ in scrape(proxy.root_url)}
    root = Path(__file__).resolve().parents[2] / "deploy"
    dash = json.loads((root / "grafana" / "triage.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((root / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {n for e in exprs for n in re.findall(r"\btriage_[a-z_]+\b", e)}
    assert used and used <= exposed, used - exposed
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_metrics_without_redis_drop_budget_gauges(tmp_path: Path, mock_upstream) -> None:
    """Redis gone: /metrics still answers, says so, and reports no budget value at all (not 0, not the limit)."""
    from accounting.redis_server import EmbeddedRedis

    srv = EmbeddedRedis(tmp_path / "redis-gone", persist=False).start()
    cfg = make_config(mock_upstream.base_url, srv.url)
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        assert httpx.put(f"{root}/admin/budgets", json={"tenant": "acme", "limit_usd": 5},
                         headers={"authorization": f"Bearer {MASTER}"}).status_code == 200
        m = scrape(root)
        assert total(m, "triage_accounting_up") == 1 and total(m, "triage_budget_remaining_usd") == 5
        srv.stop()
        m = scrape(root)
        assert total(m, "triage_accounting_up") == 0
        assert not [n for n, _, _ in m if n.startswith("triage_budget_")]
    finally:
        server.should_exit = True
        thread.join(15)
        srv.stop()


def test_shadow_evaluations_are_counted() -> None:
    from prometheus_client import generate_latest

    from accounting import LedgerRecord
    from router.observe.hub import Observability
    from router.observe.metrics import Metrics
    from router.observe.settings import MetricsSpec, ObservabilitySpec

    obs = Observability(ObservabilitySpec(), metrics=Metrics(MetricsSpec()))
    for i in range(3):
        obs.evaluated(LedgerRecord(request_id=f"e{i}", key_id="k", tenant="t", cost_usd=0.25,
                                   evaluation={"served_tier": "fast", "shadow_tier": "deliberate"}))
    obs.metrics.flush()
    s = parse(generate_latest(obs.metrics.registry).decode())
    assert total(s, "triage_shadow_runs_total", served_tier="fast", shadow_tier="deliberate") == 3
    assert total(s, "triage_shadow_cost_usd_total", shadow_tier="deliberate") == 0.75
