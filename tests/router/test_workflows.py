"""Multi-step workflows: redundant context, the response cache, single flight and deployment affinity.

All through the real proxy, a real Redis and the simulated upstream (which reports cached prompt tokens
when a message prefix repeats within one deployment)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import redis
import yaml

from accounting import redis_keys as rk
from accounting.workflows import parse
from simulator.server import MockServer
from simulator.state import MockSettings
from tests.router.conftest import MASTER, Proxy, make_config, start_proxy

DOC = "\n\n".join(
    f"Section {i}. The quarterly revenue of unit {i} grew by {i * 3} percent, driven by contracts in region {i % 4}; "
    f"costs rose by {i} percent because of hiring, and the margin moved from {20 + i} to {21 + i} percent."
    for i in range(1, 25)
)
SYSTEM = "You are a careful analyst. Use only the document you are given."


def ledger(proxy: Proxy, tenant: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    r = redis.Redis.from_url(proxy.redis_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            recs = [orjson.loads(f[b"d"]) for _, f in r.xrange(rk.ledger(tenant))]
            if len(recs) >= n or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)
    finally:
        r.close()


def upstream_calls(proxy: Proxy) -> int:
    return int(httpx.get(proxy.mock.root_url + "/_mock/stats").json()["total"])


def workflow_steps(client: openai.OpenAI, wid: str, headers: dict[str, str] | None = None) -> list[Any]:
    """planner -> executor x3 -> verifier, every step re-sending the document and the plan."""
    out = []
    history: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": f"Document:\n\n{DOC}\n\nMake a three-step plan."}]
    for step in ("plan", "exec-1", "exec-2", "exec-3", "verify"):
        r = client.chat.completions.with_raw_response.create(
            model="triage/fast", messages=history,
            extra_headers={"x-triage-workflow": wid, "x-triage-step": step, **(headers or {})})
        out.append(r)
        history = history + [{"role": "assistant", "content": r.parse().choices[0].message.content},
                             {"role": "user", "content": f"Now do the {step} follow-up."}]
    return out


def test_five_step_workflow_redundancy_and_summary(proxy: Proxy) -> None:
    key = proxy.create_key("wf")
    workflow_steps(proxy.client(api_key=key), "report-42")
    recs = sorted(ledger(proxy, "wf", 5), key=lambda r: r["workflow_depth"])
    assert [r["workflow_depth"] for r in recs] == [1, 2, 3, 4, 5]
    assert [r["workflow_step"] for r in recs] == ["plan", "exec-1", "exec-2", "exec-3", "verify"]
    assert all(r["workflow"] == "report-42" for r in recs)
    assert recs[0]["redundant_tokens"] == 0
    prompts = [sum(c["prompt_tokens"] for c in r["calls"]) for r in recs]
    for prev, r in zip(recs, recs[1:]):
        # every later step re-sends at least the whole previous prompt's content
        assert r["redundant_tokens"] > 0.8 * sum(c["prompt_tokens"] for c in prev["calls"]) - 50
        assert r["redundant_nusd"] > 0
    # the provider's prompt cache took part of it: the simulator caches repeated prefixes per deployment
    assert sum(c["cached_tokens"] for r in recs[1:] for c in r["calls"]) > 0

    r = redis.Redis.from_url(proxy.redis_url)
    try:
        s = parse(r.hgetall(rk.workflow("wf", "report-42")))
    finally:
        r.close()
    assert s["steps"] == 5 and s["depth"] == 5 and s["tiers"] == {"fast": 5}
    assert s["cost_nusd"] == sum(c["cost_nusd"] for rec in recs for c in rec["calls"])
    assert s["redundant_tokens"] == sum(rec["redundant_tokens"] for rec in recs)
    assert s["prompt_tokens"] == sum(prompts) and 0.5 < s["redundant_share"] < 1
    assert s["steps_by_name"] == {"plan": 1, "exec-1": 1, "exec-2": 1, "exec-3": 1, "verify": 1}
    # the same workflow id in another tenant is another workflow
    other = proxy.create_key("wf-other")
    proxy.client(api_key=other).chat.completions.create(
        model="triage/fast", messages=[{"role": "user", "content": f"Document:\n\n{DOC}"}],
        extra_headers={"x-triage-workflow": "report-42"})
    rec = ledger(proxy, "wf-other", 1)[0]
    assert rec["workflow_depth"] == 1 and rec["redundant_tokens"] == 0


@pytest.mark.parametrize("headers, why", [
    ({"x-triage-workflow": ""}, "x-triage-workflow"),
    ({"x-triage-workflow": "x" * 129}, "x-triage-workflow"),
    ({"x-triage-workflow": "ok", "x-triage-step": "s" * 200}, "x-triage-step"),
])
def test_bad_workflow_labels_are_400(proxy: Proxy, headers: dict[str, str], why: str) -> None:
    with httpx.Client(base_url=proxy.root_url) as c:
        r = c.post("/v1/chat/completions", json={"model": "triage/fast", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"authorization": f"Bearer {proxy.master_key}", **{k: v for k, v in headers.items()}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == why


def test_twenty_identical_cacheable_requests_make_one_upstream_call(proxy: Proxy) -> None:
    key = proxy.create_key("cache")
    before = upstream_calls(proxy)
    body = {"model": "triage/fast", "temperature": 0, "messages": [{"role": "user", "content": "Name three primes."}]}

    async def one(c: openai.AsyncOpenAI) -> Any:
        return await c.chat.completions.with_raw_response.create(**body)

    async def burst() -> list[Any]:
        c = proxy.async_client(api_key=key)
        try:
            return await asyncio.gather(*(one(c) for _ in range(20)))
        finally:
            await c.close()

    res = asyncio.run(burst())
    assert upstream_calls(proxy) - before == 1
    texts = {r.parse().choices[0].message.content for r in res}
    assert len(texts) == 1
    hits = [r for r in res if r.headers.get("x-triage-cache") == "hit"]
    assert len(hits) == 19 and all(r.headers["x-triage-cost-nusd"] == "0" for r in hits)
    assert all(r.parse().usage.model_extra["cost_nusd"] == 0 for r in hits)
    recs = ledger(proxy, "cache", 20)
    paid = [r for r in recs if not r.get("cache_hit")]
    assert len(paid) == 1 and paid[0]["cost_nusd"] > 0
    hit_rows = [r for r in recs if r.get("cache_hit")]
    assert len(hit_rows) == 19
    assert all(r["cost_nusd"] == 0 and r["calls"] == [] and r["cache_saved_nusd"] == paid[0]["cost_nusd"] for r in hit_rows)

    # a stream of the same request is served from the cache, as a stream
    c = proxy.client(api_key=key)
    chunks = list(c.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == texts.pop()
    assert chunks[-1].usage is not None and upstream_calls(proxy) - before == 1


def test_cache_never_crosses_tenants_params_or_errors(proxy: Proxy) -> None:
    a, b = proxy.client(api_key=proxy.create_key("ca")), proxy.client(api_key=proxy.create_key("cb"))
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    n0 = upstream_calls(proxy)
    a.chat.completions.create(model="triage/fast", temperature=0, messages=msgs)
    b.chat.completions.create(model="triage/fast", temperature=0, messages=msgs)  # other tenant: miss
    assert upstream_calls(proxy) - n0 == 2
    for extra in ({"seed": 7}, {"max_tokens": 50}, {"response_format": {"type": "json_object"}}):
        a.chat.completions.create(model="triage/fast", temperature=0, messages=msgs, **extra)
    assert upstream_calls(proxy) - n0 == 5
    r = a.chat.completions.with_raw_response.create(model="triage/fast", temperature=0.7, messages=msgs)
    assert r.headers.get("x-triage-cache") is None  # not deterministic, not opted in
    r = a.chat.completions.with_raw_response.create(model="triage/fast", temperature=0, messages=msgs,
                                                    extra_headers={"x-triage-cache": "off"})
    assert r.headers.get("x-triage-cache") is None
    # an upstream error is never cached: the next identical request goes upstream and succeeds
    httpx.post(proxy.mock.root_url + "/_mock/faults", json={"model": "*", "fault": "400", "count": 1})
    errs = [{"role": "user", "content": "Fail once, then answer."}]
    with pytest.raises(openai.BadRequestError):
        a.chat.completions.create(model="triage/fast", temperature=0, messages=errs)
    ok = a.chat.completions.with_raw_response.create(model="triage/fast", temperature=0, messages=errs)
    assert ok.headers.get("x-triage-cache") is None and ok.parse().choices[0].message.content
    again = a.chat.completions.with_raw_response.create(model="triage/fast", temperature=0, messages=errs)
    assert again.headers.get("x-triage-cache") == "hit"


def test_workflow_steps_stick_to_one_deployment(tmp_path: Path, redis_url: str) -> None:
    """Two deployments of one model: a workflow's steps stay on one (its prompt cache hits); without a
    workflow, requests spread over both and the cached share falls."""
    with MockServer(MockSettings()) as m1, MockServer(MockSettings()) as m2:
        cfg = make_config(m1.base_url, redis_url)
        second = {"model_name": "small", "litellm_params": {"model": "openai/mock-small", "api_base": m2.base_url,
                                                            "api_key": "sk-upstream", "timeout": 5},
                  "model_info": cfg["model_list"][0]["model_info"]}
        cfg["model_list"].append(second)
        cfg["tiers"]["fast"] = {"models": ["small"]}
        path = tmp_path / "triage.yaml"
        path.write_text(yaml.safe_dump(cfg))
        server, thread, root = start_proxy(path)
        try:
            client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0)

            def cached_share(tenant_headers: dict[str, str], wid: str | None) -> tuple[float, set[int]]:
                hist: list[dict[str, Any]] = [{"role": "user", "content": f"Document:\n\n{DOC}\n\nSummarise."}]
                cached = prompt = 0
                servers = set()
                for i in range(6):
                    h = dict(tenant_headers)
                    if wid:
                        h["x-triage-workflow"] = wid
                    before = [httpx.get(m.root_url + "/_mock/stats").json()["total"] for m in (m1, m2)]
                    r = client.chat.completions.create(model="triage/fast", messages=hist, extra_headers=h)
                    after = [httpx.get(m.root_url + "/_mock/stats").json()["total"] for m in (m1, m2)]
                    servers |= {j for j in (0, 1) if after[j] > before[j]}
                    cached += r.usage.prompt_tokens_details.cached_tokens if r.usage.prompt_tokens_details else 0
                    prompt += r.usage.prompt_tokens
                    hist = hist + [{"role": "assistant", "content": r.choices[0].message.content},
                                   {"role": "user", "content": f"Follow-up {i}."}]
                return cached / prompt, servers

            share_wf, servers_wf = cached_share({}, "sticky-1")
            for m in (m1, m2):
                httpx.post(m.root_url + "/_mock/reset")
            share_free, servers_free = cached_share({}, None)
            assert len(servers_wf) == 1 and len(servers_free) == 2
            assert share_wf > share_free
        finally:
            server.should_exit = True
            thread.join(15)


def test_workflow_cap_is_atomic_across_concurrent_steps(proxy: Proxy) -> None:
    key = proxy.create_key("wcap")
    cap = 0.0005
    hdr = {"x-triage-workflow": "capped", "x-triage-workflow-max-cost": str(cap)}
    c = proxy.client(api_key=key)
    r = c.chat.completions.with_raw_response.create(model="triage/fast", max_tokens=50, extra_headers=hdr,
                                                    messages=[{"role": "user", "content": "step one"}])
    left = float(r.headers["x-triage-workflow-remaining-usd"])
    assert 0 < left < cap and abs((cap - left) - float(r.headers["x-triage-cost-usd"])) < 1e-9

    async def step(i: int) -> int:
        ac = proxy.async_client(api_key=key)
        try:
            await ac.chat.completions.create(model="triage/fast", max_tokens=50, extra_headers=hdr,
                                             messages=[{"role": "user", "content": f"step {i} " + "x " * 40}])
            return 200
        except openai.RateLimitError as e:
            assert "workflow 'capped'" in str(e)
            return 429
        finally:
            await ac.close()

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(step(i) for i in range(12))))

    codes = asyncio.run(burst())
    assert 429 in codes and 200 in codes
    recs = [x for x in ledger(proxy, "wcap", 1 + codes.count(200)) if x.get("kind", "request") == "request"]
    spent = sum(x["cost_nusd"] for x in recs if x.get("workflow") == "capped")
    assert spent <= cap * 1e9
    # another workflow of the same key is not affected; neither is the same id in another tenant
    ok = c.chat.completions.with_raw_response.create(model="triage/fast", max_tokens=50,
                                                     extra_headers={"x-triage-workflow": "other",
                                                                    "x-triage-workflow-max-cost": str(cap)},
                                                     messages=[{"role": "user", "content": "hello"}])
    assert ok.headers["x-triage-workflow-remaining-usd"]
    c2 = proxy.client(api_key=proxy.create_key("wcap2"))
    c2.chat.completions.create(model="triage/fast", max_tokens=50, extra_headers=hdr,
                               messages=[{"role": "user", "content": "step one"}])


def test_bad_workflow_cap_is_400(proxy: Proxy) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        proxy.client().chat.completions.create(
            model="triage/fast", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-triage-workflow": "w", "x-triage-workflow-max-cost": "inf"})
    assert e.value.body["param"] == "x-triage-workflow-max-cost"


def test_workflows_command_lists_depth_and_redundancy(proxy: Proxy) -> None:
    from typer.testing import CliRunner

    from router.cli import app

    workflow_steps(proxy.client(api_key=proxy.create_key("wcli")), "deep-1")
    ledger(proxy, "wcli", 5)
    res = CliRunner().invoke(app, ["workflows", "--tenant", "wcli", "--redis-url", proxy.redis_url, "--json"])
    assert res.exit_code == 0, res.output
    out = orjson.loads(res.stdout)
    (w,) = out["workflows"]
    assert w["workflow"] == "deep-1" and w["steps"] == 5 and w["redundant_tokens"] > 0
    assert [d["depth"] for d in out["cost_by_depth"]] == [1, 2, 3, 4, 5]
    res = CliRunner().invoke(app, ["workflows", "--tenant", "wcli", "--redis-url", proxy.redis_url])
    assert res.exit_code == 0 and "deep-1" in res.stdout
