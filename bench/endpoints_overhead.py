"""Per-request latency of chat vs the endpoints translated onto it (completions, responses, messages)
and embeddings: triage/fast on the simulated upstream, sequential, 300 requests each, after a warm-up.

Run: .venv/bin/python bench/endpoints_overhead.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import yaml  # noqa: E402

from accounting.redis_server import EmbeddedRedis  # noqa: E402
from simulator.server import MockServer  # noqa: E402
from simulator.state import MockSettings  # noqa: E402
from tests.router.conftest import MASTER, make_config, start_proxy  # noqa: E402

N = 300
HI = [{"role": "user", "content": "hi"}]
REQUESTS = {
    "chat": ("/v1/chat/completions", {"model": "triage/fast", "messages": HI}),
    "completions": ("/v1/completions", {"model": "triage/fast", "prompt": "hi"}),
    "responses": ("/v1/responses", {"model": "triage/fast", "input": "hi"}),
    "messages": ("/v1/messages", {"model": "triage/fast", "max_tokens": 64, "messages": HI}),
    "embeddings": ("/v1/embeddings", {"model": "small", "input": "hi"}),
}


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    redis = EmbeddedRedis(tmp / "redis", persist=False)
    redis.start()
    try:
        with MockServer(MockSettings()) as mock:
            cfg = tmp / "triage.yaml"
            cfg.write_text(yaml.safe_dump(make_config(mock.base_url, redis.url)))
            server, thread, root = start_proxy(cfg)
            res: dict[str, list[float]] = {k: [] for k in REQUESTS}
            with httpx.Client(base_url=root, headers={"authorization": f"Bearer {MASTER}"}, timeout=30) as c:
                for _ in range(30):
                    for path, body in REQUESTS.values():
                        c.post(path, json=body)
                for _ in range(N):
                    for k, (path, body) in REQUESTS.items():
                        t = time.perf_counter()
                        r = c.post(path, json=body)
                        res[k].append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200, (k, r.text)
            server.should_exit = True
            thread.join(10)
        for k, v in res.items():
            v.sort()
            print(f"{k:12s} p50 {statistics.median(v):6.2f} ms  p95 {v[int(len(v) * 0.95)]:6.2f} ms  (n={len(v)})")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
