"""What buffering the cheap answer costs in time to first token: triage/fast vs triage/cascade.

Runs the simulator (difficulty model on, per-token pacing like a real model), an embedded
Redis and the proxy in this process, then streams the same questions through triage/fast and
triage/cascade (1 extra sample, logprobs) and reports median TTFT and total time, separately
for answers the cascade accepted and those it escalated to the reasoning tier.

    python bench/cascade_ttft.py [--n 30] [--ttft-ms 300] [--itl-ms 25] [--tokens 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402
import uvicorn  # noqa: E402
import yaml  # noqa: E402

from accounting.redis_server import EmbeddedRedis  # noqa: E402
from simulator.app import MockSettings  # noqa: E402
from simulator.server import MockServer  # noqa: E402

MASTER = "sk-bench-master"


def config(base: str, redis_url: str) -> dict:
    price = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
    models = [{"model_name": n, "litellm_params": {"model": f"openai/mock-{n}", "api_base": base, "api_key": "sk",
                                                   "timeout": 30},
               "model_info": {**price, "supports_reasoning": n == "reasoner"}} for n in ("small", "reasoner")]
    return {"model_list": models, "redis_url": redis_url, "master_key": MASTER,
            "tiers": {"fast": {"models": ["small"]}, "cascade": {"models": ["small"], "samples": 1},
                      "reasoning": {"models": ["reasoner"], "reasoning_effort": "low"}}}


def stream_times(client: openai.OpenAI, model: str, q: str) -> tuple[float, float, None]:
    t0 = time.perf_counter()
    first = None
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": q}], stream=True)
    for ch in raw.parse():
        if first is None and ch.choices and ch.choices[0].delta.content:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return (first or total) * 1000, total * 1000, None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--ttft-ms", type=float, default=300)
    ap.add_argument("--itl-ms", type=float, default=25)
    ap.add_argument("--tokens", type=int, default=40)
    a = ap.parse_args()
    settings = MockSettings(difficulty=True, ttft_ms=a.ttft_ms, itl_ms=a.itl_ms, completion_tokens=a.tokens,
                            model_skill={"mock-small": 0.45})
    with tempfile.TemporaryDirectory() as tmp, MockServer(settings) as mock:
        redis = EmbeddedRedis(Path(tmp) / "redis").start()
        try:
            path = Path(tmp) / "triage.yaml"
            path.write_text(yaml.safe_dump(config(mock.base_url, redis.url)))
            import socket

            from router.http.app import build_app
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(build_app(config_path=str(path)), host="127.0.0.1", port=port,
                                                   log_level="warning", lifespan="on", access_log=False))
            t = threading.Thread(target=server.run, daemon=True)
            t.start()
            while not server.started:
                time.sleep(0.05)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER)
            rows: dict[str, list[tuple[float, float]]] = {"fast": [], "cascade accepted": [], "cascade escalated": []}
            for i in range(a.n):
                q = f"Question {i}: what is the value of item {i}?"
                f, tot, _ = stream_times(client, "triage/fast", q)
                rows["fast"].append((f, tot))
                f, tot, _ = stream_times(client, "triage/cascade", q)
                # a stream's headers leave before the check: ask once more without streaming to see who answered
                esc = client.chat.completions.with_raw_response.create(
                    model="triage/cascade", messages=[{"role": "user", "content": q}]).headers["x-triage-model"] != "small"
                rows["cascade escalated" if esc else "cascade accepted"].append((f, tot))
            print(f"simulator: ttft {a.ttft_ms:.0f} ms, itl {a.itl_ms:.0f} ms, {a.tokens} tokens per answer; n={a.n}")
            print(f"{'path':<20} {'n':>3} {'TTFT p50 ms':>12} {'total p50 ms':>13}")
            for name, vals in rows.items():
                if vals:
                    print(f"{name:<20} {len(vals):>3} {statistics.median(v[0] for v in vals):>12.0f} "
                          f"{statistics.median(v[1] for v in vals):>13.0f}")
            server.should_exit = True
            t.join(10)
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
