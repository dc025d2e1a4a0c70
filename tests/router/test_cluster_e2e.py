"""Two `triage serve` processes on a real 3-master Redis Cluster: a budget raced across them holds,
the ledger matches what was served, and compacting the ledger leaves reports and exports unchanged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.helpers import wait_ready
from tests.router.conftest import MASTER, free_port, make_config
from tests.router.test_metering_e2e import FLAT, ledger_rows

N = 300


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "router.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_two_proxies_on_a_cluster_race_and_compact(tmp_path: Path, redis_cluster_url: str, mock_upstream) -> None:
    cfg = make_config(mock_upstream.base_url, redis_cluster_url)
    flat = json.loads(json.dumps(FLAT))
    flat["litellm_params"]["api_base"] = mock_upstream.base_url
    cfg["model_list"].append(flat)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ports = [free_port() for _ in range(2)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TRIAGE_STATE_DIR": str(tmp_path / "state")}
    env.pop("REDIS_URL", None)
    procs = [subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(p)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for p, proc in zip(ports, procs):
            wait_ready(p, proc)
        root = f"http://127.0.0.1:{ports[0]}"
        keys = {}
        for tenant, budget in (("race", 1.0), ("other", 100.0)):
            r = httpx.post(f"{root}/admin/keys", json={"tenant": tenant, "budget_usd": budget, "period": "total"},
                           headers={"authorization": f"Bearer {MASTER}"}, timeout=30)
            assert r.status_code == 201, r.text
            keys[tenant] = r.json()["key"]

        async def run() -> list[tuple[str, int]]:
            clients = {t: [openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key=k, max_retries=0,
                                              timeout=60) for p in ports] for t, k in keys.items()}
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> tuple[str, int]:
                t = "race" if i % 3 else "other"
                async with sem:
                    try:
                        await clients[t][i % 2].chat.completions.create(
                            model="flat", max_tokens=16, messages=[{"role": "user", "content": f"race {i}"}])
                        return t, 200
                    except openai.RateLimitError as e:
                        assert e.body["code"] == "budget_exceeded"
                        return t, 429

            return await asyncio.gather(*[one(i) for i in range(N)])

        statuses = asyncio.run(run())
        race_ok = sum(1 for t, s in statuses if t == "race" and s == 200)
        other_ok = sum(1 for t, s in statuses if t == "other" and s == 200)
        assert race_ok == 100, f"admitted {race_ok} at $0.01 against $1.00"
        assert other_ok == N // 3
        rows = {t: ledger_rows(root, t) for t in keys}
        served = {t: [r for r in rows[t] if r.get("kind", "request") == "request"] for t in keys}
        assert len(served["race"]) == 100 and len(served["other"]) == other_ok
        assert sum(r["cost_nusd"] for r in served["race"]) == 1_000_000_000

        # compact everything into Parquet with the CLI, against the same cluster
        base = ["--redis-url", redis_cluster_url, "--cold", str(tmp_path / "cold")]
        reps0 = {t: _cli("ledger", "report", "--tenant", t, "--json", "--by", "tier,model", *base) for t in keys}
        exp0 = _cli("ledger", "export", "--format", "jsonl", *base)
        assert exp0.returncode == 0, exp0.stderr
        c = _cli("ledger", "compact", "--older-than-days", "0", "--json", *base)
        assert c.returncode == 0, c.stderr
        moved = {x["tenant"]: x["rows"] for x in json.loads(c.stdout)["tenants"]}
        assert moved == {t: len(rows[t]) for t in keys}
        for t in keys:
            assert _cli("ledger", "report", "--tenant", t, "--json", "--by", "tier,model", *base).stdout == \
                reps0[t].stdout
        exp1 = _cli("ledger", "export", "--format", "jsonl", *base)
        assert sorted(exp1.stdout.splitlines()) == sorted(exp0.stdout.splitlines())
        assert len(exp1.stdout.splitlines()) == sum(len(v) for v in rows.values())
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
