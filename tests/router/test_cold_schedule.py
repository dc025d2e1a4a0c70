"""`serve` compacts the ledger on a schedule when the config asks for it (accounting.cold_*)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import redis as redis_sync
import yaml

from accounting import redis_keys as rk
from tests.router.conftest import MASTER, make_config, start_proxy


def test_serve_compacts_on_schedule(tmp_path: Path, redis_url: str, mock_upstream) -> None:
    cold = tmp_path / "cold"
    cfg = make_config(mock_upstream.base_url, redis_url, accounting={
        "cold_ledger_url": str(cold), "cold_after_days": 0, "cold_compact_every_s": 0.2})
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        client = openai.OpenAI(base_url=root + "/v1", api_key=MASTER, max_retries=0, timeout=30)
        for i in range(3):
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": f"hi {i}"}])
        r = redis_sync.Redis.from_url(redis_url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the schedule runs every 0.2 s; poll for its effect
            moved = int(r.hget(rk.ledger_cold("admin"), "rows") or 0)
            if moved >= 3:
                break
            time.sleep(0.1)
        assert moved >= 3
        assert r.xlen(rk.ledger("admin")) == 0
        assert list(cold.rglob("tenant=admin/day=*/*.parquet"))
        r.close()
        # the admin API reads the cold ledger too: every served request, once, with its cost
        h = {"authorization": f"Bearer {MASTER}"}
        rows = [json.loads(x) for x in httpx.get(f"{root}/admin/ledger/export", params={"tenant": "admin"},
                                                  headers=h, timeout=30).text.splitlines() if x.strip()]
        assert len(rows) == len({x["request_id"] for x in rows}) == moved
        rep = httpx.get(f"{root}/admin/ledger/report", params={"tenant": "admin", "since": "1d"}, headers=h,
                        timeout=30).json()
        assert rep["totals"]["requests"] == moved
        assert rep["totals"]["cost_nusd"] == sum(x["cost_nusd"] for x in rows) > 0
    finally:
        server.should_exit = True
        thread.join(15)
