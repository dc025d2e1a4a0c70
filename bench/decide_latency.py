"""Microbenchmark: `policy.decide()` per call, the deliberate tier (the longest ladder), with and without a cap.

    python bench/decide_latency.py [-n 3000]

Target: under 50 us per decision on one core. Moved here from tests/router/test_policy.py: a timing
bound on a shared 2-core CI host measures the neighbours, not the code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router import policy  # noqa: E402
from tests.router.test_policy import RAW, REQ, P, cls, load, mapping  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3000)
    n = ap.parse_args().n
    cfg, prices, tables = load(mapping())
    c = cls(0.9, "deliberate")
    for cap in (None, 0.01):
        for _ in range(200):
            policy.decide(REQ, RAW, c, cap, cfg, prices, P, tables=tables)
        t0 = time.perf_counter()
        for _ in range(n):
            policy.decide(REQ, RAW, c, cap, cfg, prices, P, tables=tables)
        us = (time.perf_counter() - t0) / n * 1e6
        print(f"decide() deliberate cap={cap}: {us:.1f} us/call (target < 50)")


if __name__ == "__main__":
    main()
