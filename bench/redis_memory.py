"""Redis memory per request, measured through the real proxy (embedded defaults + simulated upstream).

    python bench/redis_memory.py --requests 3000

Starts a private redis-server and `triage serve`, sends N chat requests (a mix that the classifier
routes across the three tiers) with a tenant key that has key and tenant budgets, then reports
INFO used_memory growth and MEMORY USAGE per key family, per request. Numbers go in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import openai
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from accounting.redis_server import EmbeddedRedis, _free_port  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Translate 'good morning' to Spanish.",
    "Write a Python function that merges two sorted lists and explain its complexity.",
    "Prove that there are infinitely many primes, step by step.",
    "Summarise the causes of the First World War in three sentences.",
    "Design a rate limiter for a distributed API gateway; discuss trade-offs between token bucket and sliding window.",
]


def family(key: str) -> str:
    if key.startswith("triage:{"):
        rest = key.split("}:", 1)[1]
        return "T " + rest.split(":", 1)[0]
    return "P " + key[len("triage:"):].split(":", 1)[0]


async def load(base: str, key: str, n: int, conc: int) -> int:
    client = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=2, timeout=60)
    sem = asyncio.Semaphore(conc)
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        async with sem:
            await client.chat.completions.create(
                model="triage/auto", max_tokens=64,
                messages=[{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} (#{i})"}])
            ok += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    return ok


def measure(r: redis.Redis) -> tuple[int, dict[str, tuple[int, int]]]:
    r.execute_command("MEMORY", "PURGE")
    used = int(r.info("memory")["used_memory"])
    fam: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for k in r.scan_iter(count=1000):
        k = k.decode()
        f = fam[family(k)]
        f[0] += 1
        f[1] += int(r.memory_usage(k, samples=0) or 0)
    return used, {k: (v[0], v[1]) for k, v in fam.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="triage-mem-"))
    srv = EmbeddedRedis(tmp / "redis", persist=False).start()
    r = redis.Redis.from_url(srv.url)
    port = _free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TRIAGE_STATE_DIR": str(tmp / "state")}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--redis-url", srv.url, "--port", str(port),
                             "--state-dir", str(tmp / "state")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("proxy did not start")
            time.sleep(0.3)
        master = (tmp / "state" / "master.key").read_text().strip()
        resp = httpx.post(f"http://127.0.0.1:{port}/admin/keys", headers={"authorization": f"Bearer {master}"},
                          json={"tenant": "acme", "budget_usd": 1000.0, "period": "month"}, timeout=30)
        key = resp.json()["key"]
        httpx.post(f"http://127.0.0.1:{port}/admin/budgets", headers={"authorization": f"Bearer {master}"},
                   json={"scope": "tenant:acme", "limit_usd": 5000.0, "period": "month"}, timeout=30)
        asyncio.run(load(f"http://127.0.0.1:{port}/v1", key, 50, a.concurrency))  # warm-up
        used0, fam0 = measure(r)
        t0 = time.monotonic()
        ok = asyncio.run(load(f"http://127.0.0.1:{port}/v1", key, a.requests, a.concurrency))
        dt = time.monotonic() - t0
        used1, fam1 = measure(r)
        per_req = (used1 - used0) / ok
        rows = []
        for f in sorted(set(fam0) | set(fam1)):
            n0, b0 = fam0.get(f, (0, 0))
            n1, b1 = fam1.get(f, (0, 0))
            rows.append({"family": f, "keys_added": n1 - n0, "bytes_added": b1 - b0,
                         "bytes_per_request": round((b1 - b0) / ok, 1)})
        xlen = r.xlen("triage:{acme}:ledger")
        sample = r.xrevrange("triage:{acme}:ledger", count=1)[0][1][b"d"]
        out = {"requests": ok, "seconds": round(dt, 1), "used_memory_growth_bytes": used1 - used0,
               "bytes_per_request_info": round(per_req, 1), "ledger_entries": xlen,
               "ledger_record_json_bytes": len(sample), "families": rows,
               "redis_version": r.info("server")["redis_version"]}
        # the same entries in the cold ledger: Parquet bytes per row
        from redis.asyncio import Redis as ARedis  # noqa: PLC0415

        from accounting.cold import ColdLedger  # noqa: PLC0415

        async def compact() -> int:
            ar = ARedis.from_url(srv.url)
            res = await ColdLedger(str(tmp / "cold")).compact_tenant(ar, "acme", 0, batch=5000, now=time.time() + 60)
            await ar.aclose()
            return res.rows

        rows_moved = asyncio.run(compact())
        pq_bytes = sum(p.stat().st_size for p in (tmp / "cold").rglob("*.parquet"))
        out["parquet_rows"] = rows_moved
        out["parquet_bytes_per_row"] = round(pq_bytes / max(1, rows_moved), 1)
        print(json.dumps(out, indent=2))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        srv.stop()


if __name__ == "__main__":
    main()
