"""The ceiling section: Triage governed beside a bare forwarder (bench/forwarder.py) and LiteLLM's
proxy, in the same run, against the simulated upstream at zero latency; reported as ratios.

c=1 overhead (each target's p50 minus direct-to-mock's p50 of the same round, rounds interleaved)
and closed-loop req/s at c=16 (targets interleaved per repetition), so the machine's drift and
other people's load hit every target alike. Absolute figures from a shared box mean little; the
ratios within one run are the result.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import wrk
from sections import loadgen, mock_settings, spread

GOVERNED = "triage-governed"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _wrk_rounds(ctx: Any, names: list[str], rounds: int, seconds: float) -> dict[str, Any]:
    """c=1 with wrk: each round runs every target once, in turn, so drift hits all alike."""
    out: dict[str, Any] = {"targets": {n: {"round_p50": [], "errors": 0} for n in names}}
    for _ in range(rounds):
        for name in names:
            r = wrk.run(ctx.target(name), 1, seconds)
            out["targets"][name]["round_p50"].append(r["p50_ms"])
            out["targets"][name]["errors"] += r["errors"]
    return out


VARIED = GOVERNED + " (distinct prompts)"


def _closed(ctx: Any, name: str, seconds: float) -> dict[str, Any]:
    if ctx.use_wrk:
        target = ctx.target(name) if name != VARIED else {**ctx.target(GOVERNED), "vary": True}
        r = wrk.run(target, 16, seconds)
        return {"rps": r["rps"], "ok": r["requests"] - r["errors"], "errors": r["errors"], "warmup_ok": 0,
                "warmup_errors": 0, "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]}
    return loadgen({"mode": "closed", "concurrency": 16, "duration": seconds, "warmup": 1, "target": ctx.target(name)})


def run(ctx: Any) -> dict[str, Any]:
    names = [n for n in ("forwarder", GOVERNED, "triage-baseline", "litellm") if n in ctx.procs]
    mock_settings(ctx, latency_ms=0)
    ctx.use_wrk = wrk.available() and not os.environ.get("BENCH_NO_WRK")
    n, rounds = (100, 5) if ctx.quick else (300, 9)
    if ctx.use_wrk:
        res = _wrk_rounds(ctx, ["direct", *names], rounds, 2 if ctx.quick else 3)
    else:
        res = loadgen({"mode": "rounds", "n": n, "rounds": rounds, "warmup": 50,
                       "targets": {name: ctx.target(name) for name in ["direct", *names]}})
    direct = res["targets"]["direct"]
    out: dict[str, Any] = {"targets": names, "load_avg_start": os.getloadavg(), "n_per_round": n, "rounds": rounds,
                           "load_generator": "wrk -t1" if ctx.use_wrk else "bench/loadgen.py",
                           "direct_p50_ms": spread(direct["round_p50"]), "c1": {}, "c16": {}}
    for name in names:
        t = res["targets"][name]
        d50 = [a - b for a, b in zip(t["round_p50"], direct["round_p50"])]
        out["c1"][name] = {"overhead_p50_ms": spread(d50), "latency_p50_ms": spread(t["round_p50"]),
                           "errors": t["errors"]}
    dur, reps = (3, 1) if ctx.quick else (5, 3)
    # the same prompt every time lets per-text caches (token counts) hit; a second governed figure with
    # every prompt distinct shows what they are worth (wrk only: its script varies the body)
    varied = [VARIED] if (ctx.use_wrk and GOVERNED in names) else []
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ["direct", *names, *varied]}
    for rep in range(reps):
        for name in runs:
            proc = ctx.procs["mock" if name == "direct" else GOVERNED if name == VARIED else name]
            c0 = proc.cpu_s()
            r = _closed(ctx, name, dur)
            c1 = proc.cpu_s()
            done = r["ok"] + r["errors"] + r["warmup_ok"] + r["warmup_errors"]
            r["cpu_ms_per_req"] = round(1000 * sum(c1[k] - c0[k] for k in c0) / max(done, 1), 3)
            runs[name].append(r)
            ctx.log(f"  ceiling c=16 {name} rep {rep}: {r['rps']:.0f} req/s, errors {r['errors']}")
    for name, rs in runs.items():
        out["c16"][name] = {"rps": spread([r["rps"] for r in rs]), "errors": sum(r["errors"] for r in rs),
                            "cpu_ms_per_req": statistics.median(r["cpu_ms_per_req"] for r in rs)}
    out["load_avg_end"] = os.getloadavg()

    def rps(name: str) -> float | None:
        return (out["c16"].get(name) or {}).get("rps", {}).get("median")

    def oh(name: str) -> float | None:
        return ((out["c1"].get(name) or {}).get("overhead_p50_ms") or {}).get("median")

    out["ratios"] = {
        "governed_vs_forwarder_rps": _ratio(rps(GOVERNED), rps("forwarder")),
        "governed_distinct_prompts_vs_forwarder_rps": _ratio(rps(VARIED), rps("forwarder")),
        "governed_vs_litellm_rps": _ratio(rps(GOVERNED), rps("litellm")),
        "baseline_vs_forwarder_rps": _ratio(rps("triage-baseline"), rps("forwarder")),
        "baseline_vs_forwarder_overhead_p50_c1": _ratio(oh("triage-baseline"), oh("forwarder")),
        "governed_vs_forwarder_overhead_p50_c1": _ratio(oh(GOVERNED), oh("forwarder")),
        "bar": {"vs_litellm_rps": ">= 6", "vs_forwarder_rps": ">= 0.4", "vs_forwarder_overhead": "<= 5"},
    }
    ctx.log(f"  ceiling ratios: {out['ratios']}")
    return out

