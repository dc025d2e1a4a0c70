"""Per-request cost of the Prometheus hooks on the hot path (observe_request + classifier + nothing else).

    python bench/metrics_overhead.py            # single-process (in-memory values)
    python bench/metrics_overhead.py --mp       # multi-worker mode (mmap files in PROMETHEUS_MULTIPROC_DIR)

Prints microseconds per request for a typical record (one fast-tier call) and a deliberate one (4 calls).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--mp", action="store_true", help="prometheus_client multiprocess mode")
ap.add_argument("-n", type=int, default=200_000)
args = ap.parse_args()
if args.mp:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="triage-prom-")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from accounting import LedgerRecord, UpstreamCall  # noqa: E402
from router.observe.metrics import Metrics  # noqa: E402
from router.observe.settings import MetricsSpec  # noqa: E402


def rec(calls: int, tier: str, model: str) -> LedgerRecord:
    return LedgerRecord(request_id="r", key_id="k", tenant="t", tier=tier, model=model, status="ok",
                        latency_ms=12.0, ttft_ms=None, cost_usd=0.0012, counterfactual_cost_usd=0.004,
                        calls=[UpstreamCall(model=model, prompt_tokens=50, completion_tokens=16, cost_usd=0.0003)
                               for _ in range(calls)])


m = Metrics(MetricsSpec())
for name, r in (("fast, 1 call", rec(1, "fast", "small")), ("deliberate, 4 calls", rec(4, "deliberate", "big"))):
    for _ in range(1000):
        m.observe_request(r)
    t = time.perf_counter()
    for _ in range(args.n):
        m.observe_request(r)
        m.observe_classifier(0.0004)
    dt = (time.perf_counter() - t) / args.n * 1e6
    print(f"{'multiprocess' if args.mp else 'single-process'}  {name:22s} {dt:6.2f} us/request")
