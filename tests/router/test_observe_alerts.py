"""Budget alerts reach a real local webhook once per crossing, however many workers check."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from redis.asyncio import Redis

from router.observe.alerts import BudgetAlerts, crossings
from router.observe.settings import AlertsSpec
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy
from tests.router.observe_seed import EASY


class Receiver:
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.fail_next = 0
        recv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with recv.cond:
                    if recv.fail_next:
                        recv.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    recv.got.append(body)
                    recv.cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def wait_for(self, pred: Any, timeout: float = 20) -> list[dict[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.got), timeout), self.got
            return list(self.got)

    def close(self) -> None:
        self.srv.shutdown()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture()
def alert_proxy(tmp_path: Path, redis_url: str, mock_upstream, receiver: Receiver) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url, observability={
        "alerts": {"webhook_url": receiver.url, "interval_s": 3600, "projection": False}})
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url,
                    server=server)
    finally:
        server.should_exit = True
        thread.join(15)


def test_soft_limit_then_exhausted_alert_once_each(alert_proxy: Proxy, receiver: Receiver) -> None:
    key = alert_proxy.create_key("acme")
    c = alert_proxy.client(key)
    c.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}])
    spent = alert_proxy.admin("GET", "/v1/usage", params={"tenant": "acme"}).json()["spend_usd"]["total"]
    # soft mode so requests keep flowing past the limit; warn from 50%
    r = alert_proxy.admin("PUT", "/admin/budgets", json={"tenant": "acme", "limit_usd": spent * 3.5, "period": "total",
                                                         "mode": "soft", "soft_pct": 50})
    assert r.status_code == 200
    for _ in range(3):  # 4 requests: 114% of the limit; the soft warning at admission wakes the checker
        c.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}])
    got = receiver.wait_for(lambda g: any(x["event"] == "budget.exhausted" for x in g) or
                            any(x["event"] == "budget.soft_limit" for x in g))
    for _ in range(4):  # more traffic over the line: no more alerts for the same crossing
        c.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}])
    got = receiver.wait_for(lambda g: any(x["event"] == "budget.exhausted" for x in g))
    events = [x["event"] for x in receiver.got]
    assert events.count("budget.exhausted") == 1
    assert events.count("budget.soft_limit") <= 1
    ex = next(x for x in got if x["event"] == "budget.exhausted")
    assert ex["scope"] == "tenant:acme" and ex["spent_usd"] >= ex["limit_usd"] and "exhausted" in ex["text"]


async def test_one_alert_per_crossing_across_workers(redis_url: str, receiver: Receiver) -> None:
    """Four checkers (as four workers would) race on the same crossing: exactly one webhook call."""
    from accounting import BudgetPolicy
    from accounting import redis_keys as rk
    from accounting.budgets import BudgetStore

    r = Redis.from_url(redis_url)
    await BudgetStore(r).set(BudgetPolicy(scope="tenant:t1", limit_usd=1.0, period="month", mode="hard", soft_pct=50))
    await r.hset(rk.spend("t1", "tenant:t1"), f"m:{datetime.now(timezone.utc):%Y-%m}", str(600_000_000))  # $0.60
    spec = AlertsSpec(webhook_url=receiver.url, projection=False, format="slack")
    workers = [BudgetAlerts(spec, Redis.from_url(redis_url)) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        sent = await asyncio.gather(*(w.check() for w in workers))
        assert sum(len(s) for s in sent) == 1
        got = receiver.wait_for(lambda g: len(g) >= 1)
        assert len(got) == 1 and "soft limit" in got[0]["text"] and got[0]["blocks"][0]["type"] == "section"
        # a failed delivery re-arms: the next check sends it
        await r.hset(rk.spend("t1", "tenant:t1"), f"m:{datetime.now(timezone.utc):%Y-%m}", str(1_000_000_000))
        receiver.fail_next = 1
        assert await workers[0].check() == []
        again = await workers[1].check()
        assert len(again) == 1 and "exhausted" in again[0]["text"]
        assert await workers[2].check() == []
    finally:
        for w in workers:
            await w.close()
        await r.aclose()


def test_projection_crossing() -> None:
    spec = AlertsSpec(webhook_url="http://unused", projection=True, projection_min_elapsed=0.05)
    now = datetime(2026, 12, 10, 0, 0, tzinfo=timezone.utc)  # 9 of 31 days gone
    b = {"scope": "tenant:x", "period": "month", "mode": "hard", "soft_pct": None, "limit_usd": 100.0,
         "spent_usd": 40.0, "reserved_usd": 0.0}
    kinds = dict(crossings(b, now, spec))
    assert "projected" in kinds and "exhausted" not in kinds
    assert kinds["projected"]["projected_usd"] == pytest.approx(40.0 / 9 * 31)
    assert kinds["projected"]["run_out_at"].startswith("2026-12-23T")  # 100/40*9 = 22.5 days in
    assert "projected" not in dict(crossings({**b, "spent_usd": 20.0}, now, spec))  # 68.9 by month end
    early = datetime(2026, 12, 1, 0, 30, tzinfo=timezone.utc)  # 0.07% of the month: too early to say
    assert "projected" not in dict(crossings({**b, "spent_usd": 1.0}, early, spec))
    assert crossings({**b, "period": "total"}, now, spec) == []


def test_hard_budget_that_refuses_is_exhausted() -> None:
    spec = AlertsSpec(webhook_url="http://unused", projection=False)
    now = datetime(2026, 12, 10, tzinfo=timezone.utc)
    b = {"scope": "tenant:x", "period": "month", "mode": "hard", "soft_pct": None, "limit_usd": 1.0,
         "spent_usd": 0.995, "reserved_usd": 0.0}
    assert crossings(b, now, spec) == []  # 99.5% spent, nothing refused yet
    (kind, d), = crossings(b, now, spec, refused=True)
    assert kind == "exhausted" and d["refused_requests"] and d["remaining_usd"] == pytest.approx(0.005)
    assert crossings({**b, "mode": "soft"}, now, spec, refused=True) == []  # soft budgets never refuse


def test_hard_budget_refusal_alerts_exhausted(alert_proxy: Proxy, receiver: Receiver) -> None:
    """A hard budget never reaches its limit exactly; the request it refuses is what exhausts it."""
    key = alert_proxy.create_key("initech")
    c = alert_proxy.client(key)
    c.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}])
    spent = alert_proxy.admin("GET", "/v1/usage", params={"tenant": "initech"}).json()["spend_usd"]["total"]
    assert alert_proxy.admin("PUT", "/admin/budgets", json={"tenant": "initech", "limit_usd": spent * 1.5,
                                                            "period": "total"}).status_code == 200
    refused = 0
    for _ in range(4):
        try:
            c.chat.completions.create(model="triage/fast", messages=[{"role": "user", "content": EASY}])
        except Exception as e:  # openai.RateLimitError: 429 budget_exceeded
            assert getattr(e, "status_code", None) == 429
            refused += 1
    assert refused >= 1
    got = receiver.wait_for(lambda g: any(x["event"] == "budget.exhausted" for x in g))
    ex = [x for x in got if x["event"] == "budget.exhausted"]
    assert len(ex) == 1 and ex[0]["scope"] == "tenant:initech" and ex[0]["refused_requests"] is True
    assert ex[0]["spent_usd"] < ex[0]["limit_usd"]
