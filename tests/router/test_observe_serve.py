"""The issue's check, as an operator runs it: `triage serve --workers 2`, traffic, /ui in Chromium with the
master key and a tenant key, and /metrics against the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import wait_ready
from tests.router.conftest import MASTER, Proxy, free_port, make_config
from tests.router.observe_seed import seed
from tests.router.test_observe_metrics import parse, total

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
from tests.router.test_observe_browser import chromium_path, shot, sign_in  # noqa: E402


@pytest.mark.slow
def test_serve_workers_ui_and_metrics_agree_with_ledger(tmp_path: Path, redis_url: str, mock_upstream) -> None:
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium binary found (apt-get install -y chromium, or set TRIAGE_CHROMIUM)")
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(make_config(mock_upstream.base_url, redis_url)))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", TRIAGE_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        root = f"http://127.0.0.1:{port}"
        proxy = Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url,
                      server=None)
        s = seed(proxy)
        usage = {t: proxy.admin("GET", "/v1/usage", params={"tenant": t, "since": "1d"}).json() for t in ("acme", "globex")}
        n = sum(u["totals"]["requests"] for u in usage.values())
        cost = sum(u["totals"]["cost_usd"] for u in usage.values())
        deadline = time.monotonic() + 20  # each worker folds its counters in every 100 ms
        while True:
            m = parse(httpx.get(f"{root}/metrics").text)
            if total(m, "triage_requests_total") == n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert total(m, "triage_requests_total") == n
        assert total(m, "triage_cost_usd_total") == pytest.approx(cost, abs=1e-9)
        assert total(m, "triage_refusals_total", reason="budget_exceeded") == s.refused
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = sign_in(browser, proxy, MASTER)
                assert int(page.get_attribute("[data-kpi=requests]", "data-n")) == n
                shot(page, "10-serve-workers-master")
                page.context.close()
                page = sign_in(browser, proxy, s.globex_key)
                assert float(page.get_attribute("[data-kpi=spend-today]", "data-usd")) == usage["globex"]["spend_usd"]["day"]
                assert "acme" not in page.inner_text("main")
                shot(page, "11-serve-workers-tenant")
                page.context.close()
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
