"""The /ui dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Seeds traffic through the proxy, signs in with the master key and with a tenant key,
loads every page, checks that charts drew data and that shown numbers equal the
ledger and /v1/usage, and saves screenshots under tests/artifacts/ui/.
Skips (with the reason) when Playwright or a chromium binary is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.router.conftest import Proxy
from tests.router.observe_seed import Seeded, seed

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"


def chromium_path() -> str | None:
    for cand in (os.environ.get("TRIAGE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand and (p := shutil.which(cand) or (cand if os.path.isfile(cand) else None)):
            return p
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium binary found (apt-get install -y chromium, or set TRIAGE_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        except sync_api.Error as e:  # a binary that cannot start here (missing libraries): environment, not the UI
            pytest.skip(f"chromium at {exe} did not start: {str(e).splitlines()[0]}")
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def sign_in(browser: Any, proxy: Proxy, key: str) -> Any:
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # HTTP errors the tests provoke on purpose (403, 400) are logged by Chromium too; JS errors are not fine
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.goto(proxy.root_url + "/ui")
    page.fill("#key", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#main[data-ready='1'] [data-kpi=spend-month]")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def goto(page: Any, hash_: str, ready: str) -> None:
    before = page.get_attribute("#main", "data-render") or "0"
    page.evaluate(f"location.hash = {hash_!r}")
    # a page is done when #main is ready with a newer render number (never eval: the UI's CSP forbids it)
    page.wait_for_selector(f"#main[data-ready='1']:not([data-render='{before}'])")
    page.wait_for_selector(ready)


def chart_points(page: Any, scope: str = "main") -> list[int]:
    return page.eval_on_selector_all(f"{scope} svg.chart", "els => els.map(e => +e.getAttribute('data-points'))")


@pytest.fixture()
def seeded(proxy: Proxy) -> Seeded:
    return seed(proxy)


def test_dashboard_master_and_tenant(browser: Any, proxy: Proxy, seeded: Seeded) -> None:
    usage = {t: proxy.admin("GET", "/v1/usage", params={"tenant": t, "since": "30d"}).json() for t in ("acme", "globex")}

    # ---- master key: every tenant ----
    page = sign_in(browser, proxy, proxy.master_key)
    assert "master" in page.inner_text("#who")
    month = float(page.get_attribute("[data-kpi=spend-month]", "data-usd"))
    assert month == pytest.approx(sum(u["spend_usd"]["month"] for u in usage.values()), abs=1e-12)
    n = int(page.get_attribute("[data-kpi=requests]", "data-n"))
    assert n == sum(u["totals"]["requests"] for u in usage.values())
    assert all(p > 0 for p in chart_points(page)) and len(chart_points(page)) >= 2
    shot(page, "01-overview-master")

    goto(page, "#/spend?by=tenant&since=7d", "main svg.chart")
    assert chart_points(page)[0] > 0
    series = page.eval_on_selector_all("main svg.chart rect.seg", "els => [...new Set(els.map(e => e.dataset.series))]")
    assert set(series) == {"acme", "globex"}
    total = float(page.get_attribute("[data-total-usd]", "data-total-usd"))
    assert total == pytest.approx(sum(u["totals"]["cost_usd"] for u in usage.values()), abs=1e-12)
    shot(page, "02-spend-by-tenant")
    goto(page, "#/spend?by=model&since=7d", "main svg.chart")
    shot(page, "03-spend-by-model")

    goto(page, "#/budgets", "[data-scope='tenant:acme'] svg.chart")
    assert all(p > 0 for p in chart_points(page))
    spent = float(page.get_attribute("[data-scope='tenant:acme'] [data-usd]", "data-usd"))
    assert spent == usage["acme"]["spend_usd"]["month"]
    shot(page, "04-budgets")

    goto(page, "#/routing", "main svg.chart")
    assert chart_points(page)[0] > 0
    version = proxy.admin("GET", "/ui/api/routing").json()["classifier"]["version"]
    assert version and version in page.inner_text("main h1")  # the artifact routing now is named
    shot(page, "05-routing")

    goto(page, "#/requests", "main tbody tr.clickable")
    rows = page.eval_on_selector_all("main tbody tr.clickable", "els => els.length")
    assert rows == n
    goto(page, "#/requests?tier=deliberate", "main tbody tr.clickable")
    deliberate = proxy.admin("GET", "/ui/api/requests", params={"tier": "deliberate"}).json()["data"]
    assert page.eval_on_selector_all("main tbody tr.clickable", "els => els.length") == len(deliberate) >= 2
    page.click("main tbody tr.clickable")
    page.wait_for_selector("text=Upstream calls")
    assert page.eval_on_selector_all("main section:last-child tbody tr", "els => els.length") >= 3
    shot(page, "06-request-detail")

    goto(page, "#/keys", "#k-form")
    page.fill("#k-form [name=tenant]", "initech")
    page.fill("#k-form [name=budget_usd]", "3")
    page.click("#k-form button[type=submit]")
    page.wait_for_selector("#new-key")
    new_key = page.inner_text("#new-key")
    assert new_key.startswith("sk-triage-")
    assert any(k["tenant"] == "initech" for k in proxy.admin("GET", "/admin/keys").json()["data"])
    # the same validation as the admin API, message included
    page.fill("#b-form [name=scope]", "nonsense")
    page.fill("#b-form [name=limit_usd]", "1")
    page.click("#b-form button[type=submit]")
    page.wait_for_selector("#k-msg .notice.bad")
    api_msg = proxy.admin("PUT", "/admin/budgets", json={"scope": "nonsense", "limit_usd": 1}).json()["error"]["message"]
    assert page.inner_text("#k-msg .notice.bad") == api_msg
    shot(page, "07-keys")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    page.context.close()

    # ---- tenant key: its own tenant only ----
    page = sign_in(browser, proxy, seeded.acme_key)
    assert page.inner_text("#who") == "tenant · acme"
    assert not page.is_visible("#tenant-select") and not page.is_visible("a[data-page=keys]")
    assert float(page.get_attribute("[data-kpi=spend-month]", "data-usd")) == usage["acme"]["spend_usd"]["month"]
    assert int(page.get_attribute("[data-kpi=requests]", "data-n")) == usage["acme"]["totals"]["requests"]
    assert float(page.get_attribute("[data-kpi=savings]", "data-usd")) == usage["acme"]["totals"]["savings_usd"]
    assert int(page.get_attribute("[data-kpi=refusals]", "data-n")) == seeded.refused == 1
    shot(page, "08-overview-tenant")
    for hash_, ready in (("#/spend?by=key", "main svg.chart"), ("#/budgets", "main svg.chart"),
                         ("#/routing", "main svg.chart"), ("#/requests", "main tbody tr.clickable")):
        goto(page, hash_, ready)
        assert "globex" not in page.inner_text("main"), hash_
    tenants = set(page.eval_on_selector_all("main tbody tr.clickable td:nth-child(2)", "els => els.map(e => e.textContent)"))
    assert tenants == {"acme"}
    shot(page, "09-requests-tenant")
    # the server refuses, whatever the page asks for
    status = page.evaluate("""async () => (await fetch('/ui/api/overview?tenant=globex',
        {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('triage.key')}})).status""")
    assert status == 403
    goto(page, f"#/requests/{seeded.globex_ids[0]}", "main .notice.bad")
    goto(page, "#/keys", "main .notice.bad")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    page.context.close()


def test_bad_key_is_refused_at_sign_in(browser: Any, proxy: Proxy) -> None:
    page = browser.new_page()
    page.goto(proxy.root_url + "/ui")
    page.fill("#key", "sk-triage-not-a-key")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:has-text('Invalid')")
    assert page.is_hidden("#app")
    shot(page, "00-sign-in-refused")
    page.close()
