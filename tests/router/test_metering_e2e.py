"""Metering through the real proxy: budgets across processes, Redis outages, streams cut short."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import redis as redis_sync
import yaml

from accounting import redis_keys as rk
from accounting.redis_server import EmbeddedRedis
from tests.helpers import wait_ready
from tests.router.conftest import MASTER, Proxy, free_port, make_config, start_proxy

FLAT = {"model_name": "flat", "litellm_params": {"model": "openai/mock-flat", "api_key": "sk-up", "timeout": 10},
        # output-only price so a 16-token answer costs exactly $0.01, and so does its worst-case estimate
        "model_info": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.000625}}


def ledger_rows(proxy_root: str, tenant: str) -> list[dict]:
    r = httpx.get(f"{proxy_root}/admin/ledger/export", params={"tenant": tenant, "format": "jsonl"},
                  headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


@pytest.mark.slow
def test_budget_race_four_proxy_processes(tmp_path: Path, redis_url: str, mock_upstream) -> None:
    cfg = make_config(mock_upstream.base_url, redis_url)
    flat = json.loads(json.dumps(FLAT))
    flat["litellm_params"]["api_base"] = mock_upstream.base_url
    cfg["model_list"].append(flat)
    path = tmp_path / "race.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ports = [free_port() for _ in range(4)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    procs = [subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(p)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for p, proc in zip(ports, procs):
            wait_ready(p, proc)
        root = f"http://127.0.0.1:{ports[0]}"
        r = httpx.post(f"{root}/admin/keys", json={"tenant": "race", "budget_usd": 1.0, "period": "total"},
                       headers={"authorization": f"Bearer {MASTER}"})
        key = r.json()["key"]

        async def run() -> list[int]:
            clients = [openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key=key, max_retries=0, timeout=60)
                       for p in ports]

            async def one(i: int) -> int:
                try:
                    await clients[i % 4].chat.completions.create(
                        model="flat", max_tokens=16, messages=[{"role": "user", "content": f"race {i}"}])
                    return 200
                except openai.RateLimitError as e:
                    assert e.body["code"] == "budget_exceeded"
                    return 429

            return await asyncio.gather(*[one(i) for i in range(500)])

        statuses = asyncio.run(run())
        assert statuses.count(200) == 100, f"admitted {statuses.count(200)}"
        assert statuses.count(429) == 400
        rows = ledger_rows(root, "race")
        assert sum(1 for r in rows if r.get("kind") != "request") == 400  # refusals are ledgered too
        rows = [r for r in rows if r.get("kind") == "request"]
        assert len(rows) == 100
        assert round(sum(r["cost_usd"] for r in rows), 9) == 1.0
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture()
def private_redis(tmp_path: Path):
    srv = EmbeddedRedis(tmp_path / "redis-outage", persist=True).start()
    yield srv
    srv.stop()


def _outage_proxy(tmp_path: Path, srv: EmbeddedRedis, mock, mode: str):
    cfg = make_config(mock.base_url, srv.url, accounting={"admission_on_redis_error": mode,
                                                          "spool_dir": str(tmp_path / "spool")})
    path = tmp_path / f"outage-{mode}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return start_proxy(path)


@pytest.mark.slow
def test_redis_killed_mid_load_ledger_equals_served(tmp_path: Path, private_redis: EmbeddedRedis, mock_upstream) -> None:
    server, thread, root = _outage_proxy(tmp_path, private_redis, mock_upstream, "open")
    served = 0
    try:
        client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0, timeout=30)
        lock = threading.Lock()

        def worker(n: int, tag: str) -> None:
            nonlocal served
            for i in range(n):
                client.chat.completions.create(model="small", messages=[{"role": "user", "content": f"{tag} {i}"}])
                with lock:
                    served += 1

        def load(tag: str) -> None:
            ts = [threading.Thread(target=worker, args=(20, f"{tag}{k}")) for k in range(5)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        load("before")
        private_redis.kill()  # hard: no shutdown save, in-flight commands lost
        load("during")
        srv2 = EmbeddedRedis(private_redis.state_dir, persist=True, port=private_redis.port).start()
        try:
            time.sleep(2.5)  # past the circuit breaker's cool-down
            load("after")
            r = redis_sync.Redis.from_url(srv2.url)
            deadline = time.monotonic() + 20
            while r.xlen(rk.ledger("admin")) < served and time.monotonic() < deadline:
                client.chat.completions.create(model="small", messages=[{"role": "user", "content": "nudge"}])
                served += 1  # the nudge is served and must be ledgered too
                time.sleep(0.5)
            recs = [json.loads(f[b"d"]) for _, f in r.xrange(rk.ledger("admin"))]
            assert [x["status"] for x in recs].count("ok") == served == len(recs)
            ids = [x["request_id"] for x in recs]
            assert len(ids) == len(set(ids)), "a replayed record was written twice"
        finally:
            srv2.stop()
    finally:
        server.should_exit = True
        thread.join(15)


def test_redis_gone_fail_closed_is_503(tmp_path: Path, private_redis: EmbeddedRedis, mock_upstream) -> None:
    server, thread, root = _outage_proxy(tmp_path, private_redis, mock_upstream, "closed")
    try:
        client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0, timeout=30)
        assert client.chat.completions.create(model="small", messages=[{"role": "user", "content": "up"}])
        private_redis.kill()
        with pytest.raises(openai.APIStatusError) as ei:
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "down"}])
        assert ei.value.status_code == 503
        assert ei.value.body["code"] == "accounting_unavailable"
        assert httpx.get(root + "/readyz").status_code == 503
        assert httpx.get(root + "/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(15)


async def test_client_disconnect_mid_stream_bills_partial(proxy: Proxy) -> None:
    proxy.mock.update_settings(itl_ms=20, completion_tokens=200)
    client = proxy.async_client()
    stream = await client.chat.completions.create(model="small", messages=[{"role": "user", "content": "long story"}],
                                                  stream=True)
    got = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got >= 5:
                break
    await stream.close()
    r = redis_sync.Redis.from_url(proxy.redis_url)
    deadline = time.monotonic() + 10
    while r.xlen(rk.ledger("admin")) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    (_, fields), = r.xrange(rk.ledger("admin"))
    rec = json.loads(fields[b"d"])
    assert rec["partial"] is True and rec["streamed"] is True
    assert rec["cost_usd"] > 0
    comp = sum(c["completion_tokens"] for c in rec["calls"])
    assert 1 <= comp < 200, "bill what was generated, not the whole answer"


def test_session_pin_is_shared_across_workers(proxy: Proxy) -> None:
    from tests.router.test_routing_e2e import EASY, HARD

    server_b, thread_b, root_b = start_proxy(proxy.config_path)
    try:
        h = {"x-triage-session": "conv-shared"}
        a = proxy.client().chat.completions.with_raw_response.create(model="triage/auto", messages=HARD, extra_headers=h)
        assert a.headers["x-triage-tier"] != "fast"
        deadline = time.monotonic() + 5  # the pin is written off the request's critical path
        r = redis_sync.Redis.from_url(proxy.redis_url)
        while not r.keys(rk.session("admin", "conv-shared")) and time.monotonic() < deadline:
            time.sleep(0.05)
        b = openai.OpenAI(base_url=root_b + "/v1", api_key=MASTER, max_retries=0)
        second = b.chat.completions.with_raw_response.create(model="triage/auto", messages=EASY, extra_headers=h)
        assert second.headers["x-triage-tier"] == a.headers["x-triage-tier"], "worker B must honour worker A's pin"
        fresh = b.chat.completions.with_raw_response.create(model="triage/auto", messages=EASY,
                                                            extra_headers={"x-triage-session": "conv-other"})
        assert fresh.headers["x-triage-tier"] == "fast"
        assert 0 < r.ttl(rk.session("admin", "conv-shared")) <= 1800
    finally:
        server_b.should_exit = True
        thread_b.join(15)
