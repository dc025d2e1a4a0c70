"""Classifier speed: single-prompt p50/p99 in process, batch throughput, load time.

Run: python bench/classifier_bench.py [--json] [--model PATH] [--n 5000]
Not a timed test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier import Classifier  # noqa: E402

# A spread of typical chat prompts (tens to a few hundred words), generated here so the
# bench needs no data files.
_TYPICAL = [
    "What's the weather like in Paris tomorrow?",
    "Can you help me write a polite email to my landlord asking to fix the heating? "
    "It has been broken for a week and it is getting cold.",
    "Explain the difference between a process and a thread, with an example in Python.",
    "Prove that the square root of 2 is irrational, step by step.",
    "Summarise the following paragraph in two sentences: " + "The committee met to review the "
    "budget proposal and, after lengthy discussion, decided to postpone the vote. " * 6,
    "I have a list of dicts in Python and want to sort it by two keys, first by 'age' descending "
    "and then by 'name' ascending. Here is my code:\n```python\npeople.sort(key=lambda p: p['age'])\n```\n"
    "Why does it not work as expected?",
    "A train leaves at 3pm travelling at 60 km/h; another leaves at 4pm at 90 km/h from the same "
    "station. When does the second catch up? Show your reasoning.",
    "Translate 'good morning, how are you?' into Japanese and Spanish.",
]


def _messages(i: int) -> list[dict]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": _TYPICAL[i % len(_TYPICAL)] + f" (case {i})"}]


def run(model: str | None, n: int) -> dict:
    t0 = time.perf_counter()
    clf = Classifier.load(model)
    load_ms = (time.perf_counter() - t0) * 1000
    reqs = [_messages(i) for i in range(n)]
    for r in reqs[:500]:
        clf.classify(r)
    lat = []
    for r in reqs:
        t = time.perf_counter_ns()
        clf.classify(r)
        lat.append((time.perf_counter_ns() - t) / 1e6)
    lat.sort()
    t = time.perf_counter()
    clf.classify_batch(reqs)
    batch_s = time.perf_counter() - t
    big = [{"role": "user", "content": "lorem ipsum dolor sit amet " * 40000}]
    t = time.perf_counter()
    clf.classify(big)
    big_ms = (time.perf_counter() - t) * 1000
    return {
        "load_ms": round(load_ms, 1),
        "single_p50_ms": round(statistics.median(lat), 4),
        "single_p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 4),
        "batch_prompts_per_s": round(n / batch_s),
        "one_mb_prompt_ms": round(big_ms, 2),
        "n": n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    res = run(args.model, args.n)
    if args.json:
        print(json.dumps(res))
        return
    print(f"artifact load        {res['load_ms']:.1f} ms")
    print(f"single prompt p50    {res['single_p50_ms']:.4f} ms   (bar <= 0.2 ms)")
    print(f"single prompt p99    {res['single_p99_ms']:.4f} ms   (bar <= 1 ms)")
    print(f"batch throughput     {res['batch_prompts_per_s']} prompts/s (bar >= 5000, one core)")
    print(f"1 MB prompt          {res['one_mb_prompt_ms']:.2f} ms")


if __name__ == "__main__":
    main()
