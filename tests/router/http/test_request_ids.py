"""Request ids: the gateway's own id keys every hold, settle and ledger row; a client's id is only echoed.

A client-chosen ``x-request-id`` used to key the "already settled" marker, so
repeating one id let every request after the first go unbilled.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
import redis as redis_sync
import yaml

from accounting import redis_keys as rk
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy

GATEWAY_ID = re.compile(r"^req_[0-9a-f]{24}$")
# Output-only price: a 16-token answer costs exactly $0.01, and so does its worst-case hold.
FLAT = {"model_name": "flat", "litellm_params": {"model": "openai/mock-flat", "api_key": "sk-up", "timeout": 10},
        "model_info": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.000625}}


@pytest.fixture()
def flat_proxy(tmp_path: Path, redis_url: str, mock_upstream) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url)
    flat = json.loads(json.dumps(FLAT))
    flat["litellm_params"]["api_base"] = mock_upstream.base_url
    cfg["model_list"].append(flat)
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url,
                    server=server)
    finally:
        server.should_exit = True
        thread.join(15)


def _ledger(proxy: Proxy, tenant: str) -> list[dict]:
    r = redis_sync.Redis.from_url(proxy.redis_url)
    return [json.loads(f[b"d"]) for _, f in r.xrange(rk.ledger(tenant))]


def test_repeated_client_request_id_cannot_bypass_budget(flat_proxy: Proxy) -> None:
    key = flat_proxy.create_key("idem", budget_usd=0.05, period="total")  # five $0.01 answers

    async def run() -> list[tuple[int, str, dict]]:
        client = openai.AsyncOpenAI(base_url=flat_proxy.base_url, api_key=key, max_retries=0, timeout=60)

        async def one(i: int) -> tuple[int, str, dict]:
            try:
                r = await client.chat.completions.with_raw_response.create(
                    model="flat", max_tokens=16, messages=[{"role": "user", "content": f"same id {i}"}],
                    extra_headers={"x-request-id": "fixed-1"})
                return 200, r.headers["x-request-id"], dict(r.headers)
            except openai.RateLimitError as e:
                assert e.body["code"] == "budget_exceeded"
                return 429, e.response.headers["x-request-id"], dict(e.response.headers)

        # Ten at a time: concurrent requests with one client id must not share a hold either.
        out: list[tuple[int, str, dict]] = []
        for start in range(0, 50, 10):
            out += await asyncio.gather(*[one(i) for i in range(start, start + 10)])
        return out

    results = asyncio.run(run())
    served = [r for r in results if r[0] == 200]
    assert len(served) == 5, f"served {len(served)} on a budget for 5"
    assert sum(1 for r in results if r[0] == 429) == 45
    ids = [r[1] for r in results]
    assert all(GATEWAY_ID.match(i) for i in ids), "x-request-id must be the gateway's own id"
    assert len(set(ids)) == 50
    assert all(r[2].get("x-client-request-id") == "fixed-1" for r in results)
    every = _ledger(flat_proxy, "idem")
    rows = [r for r in every if r.get("kind") != "refusal"]
    assert len(rows) == 5
    assert sum(1 for r in every if r.get("kind") == "refusal") == 45  # denied demand is ledgered too
    assert sorted(r["request_id"] for r in rows) == sorted(r[1] for r in served)
    assert all(r["client_request_id"] == "fixed-1" for r in rows)
    assert round(sum(r["cost_usd"] for r in rows), 9) == 0.05
    usage = httpx.get(flat_proxy.root_url + "/v1/usage", headers={"authorization": f"Bearer {key}"}).json()
    assert usage["spend_usd"]["total"] == pytest.approx(0.05)


def test_unsafe_client_request_id_is_not_echoed(proxy: Proxy) -> None:
    r = proxy.client().chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "a b\tc" * 50})
    assert GATEWAY_ID.match(r.headers["x-request-id"])
    assert "x-client-request-id" not in r.headers


def test_feedback_takes_only_gateway_ids(proxy: Proxy) -> None:
    key = proxy.create_key("fb")
    r = proxy.client(key).chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "rate me"}], extra_headers={"x-request-id": "mine-1"})
    rid = r.headers["x-request-id"]
    with httpx.Client(base_url=proxy.root_url, headers={"authorization": f"Bearer {key}"}) as c:
        bad = c.post("/v1/feedback", json={"request_id": "mine-1", "score": 1})
        assert bad.status_code in (400, 404) and bad.json()["error"]["param"] == "request_id"
        weird = c.post("/v1/feedback", json={"request_id": "x:*:{}" * 5, "score": 1})
        assert weird.status_code == 400 and weird.json()["error"]["param"] == "request_id"
        assert c.post("/v1/feedback", json={"request_id": rid, "score": 1}).status_code == 200
    other = proxy.create_key("other")
    with httpx.Client(base_url=proxy.root_url, headers={"authorization": f"Bearer {other}"}) as c:
        assert c.post("/v1/feedback", json={"request_id": rid, "score": 0}).status_code == 404
