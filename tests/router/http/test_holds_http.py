"""Holds over HTTP: a refusal caused by requests in flight says so (retryable), one caused by spent money is
final; and a hold is sized from what the model can really produce, not from a default it cannot reach."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest
import redis as redis_sync
import yaml

from accounting import redis_keys as rk
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy
from tests.router.http.test_request_ids import FLAT


def _proxy(tmp_path: Path, redis_url: str, mock, cfg: dict) -> Iterator[Proxy]:
    path = tmp_path / "holds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock, redis_url=redis_url, server=server)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture()
def flat_nowait(tmp_path: Path, redis_url: str, mock_upstream) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url, accounting={"hold_wait_s": 0.0})
    flat = json.loads(json.dumps(FLAT))
    flat["litellm_params"]["api_base"] = mock_upstream.base_url
    cfg["model_list"].append(flat)
    yield from _proxy(tmp_path, redis_url, mock_upstream, cfg)


def test_refusal_by_holds_is_retryable_by_spend_final(flat_nowait: Proxy) -> None:
    key = flat_nowait.create_key("inflight", budget_usd=0.05, period="total")
    kid = next(k["key_id"] for k in flat_nowait.admin("GET", "/admin/keys").json()["data"] if k["tenant"] == "inflight")
    client = flat_nowait.client(key, timeout=60)
    flat_nowait.mock.update_settings(latency_ms=1500)  # five requests stay in flight, holding the budget
    threads = [threading.Thread(target=client.chat.completions.create,
                                kwargs={"model": "flat", "max_tokens": 16,
                                        "messages": [{"role": "user", "content": f"slow {i}"}]}) for i in range(5)]
    for t in threads:
        t.start()
    r = redis_sync.Redis.from_url(flat_nowait.redis_url)
    deadline = time.monotonic() + 20
    while int(r.hget(rk.spend("inflight", f"key:{kid}"), "reserved") or 0) < 50_000_000:
        assert time.monotonic() < deadline, "the five holds never appeared"
        time.sleep(0.02)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="flat", max_tokens=16, messages=[{"role": "user", "content": "6th"}])
    assert ei.value.response.headers["x-should-retry"] == "true"
    assert ei.value.response.headers["retry-after"]
    assert "held by requests in flight $0.05" in ei.value.body["message"]
    for t in threads:
        t.join()
    flat_nowait.mock.update_settings(latency_ms=0)
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="flat", max_tokens=16, messages=[{"role": "user", "content": "7th"}])
    assert ei.value.response.headers["x-should-retry"] == "false"
    assert "spent $0.05" in ei.value.body["message"]


@pytest.fixture()
def capped(tmp_path: Path, redis_url: str, mock_upstream) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url)
    for m in cfg["model_list"]:
        if m["model_name"] in ("small", "small-b"):
            m["model_info"]["max_output_tokens"] = 100
    yield from _proxy(tmp_path, redis_url, mock_upstream, cfg)


def test_hold_sized_by_the_models_real_output_cap(capped: Proxy) -> None:
    raw = capped.client().chat.completions.with_raw_response.create(
        model="triage/fast", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-triage-tier"] == "fast"
    sent = capped.mock.stats()["last"][-1]["body"]
    assert (sent.get("max_completion_tokens") or sent.get("max_tokens")) <= 100, sent
    r = redis_sync.Redis.from_url(capped.redis_url)
    rec = json.loads(r.xrange(rk.ledger("admin"))[-1][1][b"d"])
    est = rec["decision"]["candidates"][0]["estimate_usd"]
    assert est <= 100 * 2e-6 + 1e-3, f"hold {est} sized past what the model can produce"


@pytest.fixture()
def short_lease(tmp_path: Path, redis_url: str, mock_upstream) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url, accounting={"lease_ttl_s": 0.6})
    yield from _proxy(tmp_path, redis_url, mock_upstream, cfg)


def test_one_renewer_keeps_every_live_hold_and_lets_go_after(short_lease: Proxy) -> None:
    """Holds of requests admitted at different times are each renewed while their request lives (one
    renewer task serves them all), and nothing is left to renew once they have settled."""
    p = short_lease
    key = p.create_key("renew", budget_usd=5.0, period="total")  # a budget, so there are holds to renew
    kid = next(k["key_id"] for k in p.admin("GET", "/admin/keys").json()["data"] if k["tenant"] == "renew")
    p.mock.update_settings(latency_ms=2500)
    client = p.client(key, timeout=60)
    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=client.chat.completions.create, kwargs={
            "model": "small", "max_tokens": 16, "messages": [{"role": "user", "content": f"slow {i}"}]}))
        threads[-1].start()
        time.sleep(0.25)  # staggered, so their renewals fall due at different times
    r = redis_sync.Redis.from_url(p.redis_url)
    holds = rk.holds("renew", f"key:{kid}")
    deadline = time.monotonic() + 20
    while r.zcard(holds) < 3:
        assert time.monotonic() < deadline, "the three holds never appeared"
        time.sleep(0.01)
    first = dict(r.zrange(holds, 0, -1, withscores=True))
    renewed: set[bytes] = set()
    while len(renewed) < 3 and any(t.is_alive() for t in threads):
        for member, score in r.zrange(holds, 0, -1, withscores=True):
            if member in first and score > first[member]:
                renewed.add(member)
        time.sleep(0.02)
    assert renewed == set(first), "a live request's hold was not renewed"
    for t in threads:
        t.join(30)
    assert r.zcard(holds) == 0
    assert p.server.config.app.chat.holds.live == {}
