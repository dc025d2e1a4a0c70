"""Render a results JSON into docs/benchmarks.md and docs/benchmarks_latency.png.

    python bench/report.py bench/results/<date>.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PNG = ROOT / "docs" / "benchmarks_latency.png"
NAMES = {"direct": "direct to mock", "triage-bare": "Triage bare", "triage-governed": "Triage governed",
         "litellm": "LiteLLM proxy"}
PROXIES = ("triage-bare", "triage-governed", "litellm")


def f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def g(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def mb(x: Any) -> str:
    """RSS lists hold one value per worker; one worker reads better as a number."""
    if isinstance(x, list):
        return " / ".join(f(v) for v in x) if x else "–"
    return f(x)


def ratio(a: Any, b: Any) -> float | None:
    return a / b if a and b else None


def spread_s(s: Any, nd: int = 2) -> str:
    if not s:
        return "–"
    return f"{s['median']:.{nd}f} (IQR {s['q1']:.{nd}f}–{s['q3']:.{nd}f})"


def plot(r: dict[str, Any]) -> bool:
    op = g(r, "throughput", "open")
    if not op:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for name, runs in op.items():
        pts = sorted((float(k), v) for k, v in runs.items())
        xs = [k for k, _ in pts]
        for ax, q in zip(axes, ("p50", "p99")):
            ys = [v["lat_ms"].get(q) for _, v in pts]
            ax.plot(xs, ys, marker="o", label=NAMES.get(name, name))
    rates = sorted({float(k) for runs in op.values() for k in runs})
    for ax, q in zip(axes, ("p50", "p99")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(rates, [f"{x:g}" for x in rates])
        ax.set_yscale("log")
        ax.set_xlabel("offered load (req/s, open loop)")
        ax.set_ylabel(f"{q} latency (ms)")
        ax.set_title(f"{q} latency vs offered load, 1 worker, 0 ms upstream")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    PNG.parent.mkdir(exist_ok=True)
    fig.savefig(PNG, dpi=110)
    plt.close(fig)
    return True


def cpu(r: dict[str, Any], name: str) -> float | None:
    c = g(r, "throughput", "closed", name, "cpu_ms_per_req")
    return (c.get("proxy") or 0) + (c.get("redis") or 0) if c else None


def summary(r: dict[str, Any]) -> list[str]:
    gov_rps = g(r, "throughput", "closed", "triage-governed", "max_rps")
    lit_rps = g(r, "throughput", "closed", "litellm", "max_rps")
    gov_oh = g(r, "overhead", "triage-governed", "overhead_p50_ms", "median")
    lit_oh = g(r, "overhead", "litellm", "overhead_p50_ms", "median")
    gov_rss = max(g(r, "memory", "triage-governed", "rss_after_mb") or [0]) or None
    lit_rss = max(g(r, "memory", "litellm", "rss_after_mb") or [0]) or None
    n_mem = g(r, "memory", "triage-governed", "requests")
    end = (g(r, "rss_end", "triage-governed"), g(r, "rss_end", "litellm"))
    race = r.get("race") or {}
    rr = ratio(gov_rps, lit_rps)
    rows = [
        "| Target (1 worker, governed, same run) | Triage | LiteLLM | Ratio | Target | Met |",
        "|---|---|---|---|---|---|",
        f"| Max req/s, 0 ms upstream | {f(gov_rps, 0)} | {f(lit_rps, 0)} | {f(rr)}× | ≥ 6× | "
        f"{'yes' if rr and rr >= 6 else 'no'} |",
        f"| CPU per request, proxy + redis (ms) | {f(cpu(r, 'triage-governed'), 3)} | {f(cpu(r, 'litellm'), 3)} | "
        f"{f(ratio(cpu(r, 'litellm'), cpu(r, 'triage-governed')))}× less | (≥ 6×, same ratio in req/s per core) | "
        f"{'yes' if (ratio(cpu(r, 'litellm'), cpu(r, 'triage-governed')) or 0) >= 6 else 'no'} |",
        f"| p50 overhead, c=1 (ms) | {f(gov_oh, 2)} | {f(lit_oh, 2)} | {f(ratio(lit_oh, gov_oh))}× lower | ≤ 1.5 ms | "
        f"{'yes' if gov_oh is not None and gov_oh <= 1.5 else 'no'} |",
        f"| RSS per worker after {f(n_mem)} requests (MB; end of run) | {f(gov_rss)} ({mb(end[0])}) | "
        f"{f(lit_rss)} ({mb(end[1])}), after {f(g(r, 'memory', 'litellm', 'requests'))} | "
        f"{f(ratio(lit_rss, gov_rss))}× smaller | "
        f"≤ 200 MB | {'yes' if gov_rss and gov_rss <= 200 else 'no'} |",
    ]
    if race:
        ok = race.get("overspend_usd_max") == 0 and race.get("false_refusals_total") == 0
        rows.append(f"| Budget race: overspend / false refusals | ${f(race.get('overspend_usd_max'), 4)} / "
                    f"{f(race.get('false_refusals_total'))} | n/a (needs a database) | – | 0 / 0 | "
                    f"{'yes' if ok else 'no'} |")
    return rows


def overhead_section(r: dict[str, Any]) -> list[str]:
    o = r.get("overhead")
    if not o:
        return []
    out = ["## Proxy overhead (sequential, c=1)", "",
           f"{o['rounds']} rounds × {o['n_per_round']} requests per target, direct-to-mock rounds interleaved "
           f"with proxy rounds; overhead = proxy round median − direct median of the same cycle. "
           f"Direct p50: {spread_s(o.get('direct_p50_ms'), 3)} ms. Figures: median of round values (IQR across rounds).", "",
           "| Proxy | p50 overhead (ms) | p99 overhead (ms) | errors |", "|---|---|---|---|"]
    for n in PROXIES:
        if n in o:
            out.append(f"| {NAMES[n]} | {spread_s(o[n]['overhead_p50_ms'])} | {spread_s(o[n]['overhead_p99_ms'])} | "
                       f"{o[n]['errors']} |")
    return out + [""]


def throughput_section(r: dict[str, Any]) -> list[str]:
    t = r.get("throughput")
    if not t:
        return []
    out = ["## Throughput (1 worker, 0 ms upstream)", "",
           "Closed loop, keep-alive connections, targets interleaved; each cell is the median of "
           f"{next(iter(t['closed'].values())).get('reps', 1)} repetitions; max = the better of 16 and 64 connections.", "",
           "CPU per request is the server process's (and its Redis's) CPU time divided by the requests it "
           "served: it does not depend on how much CPU the neighbours took, so it is the steadier figure "
           "on a shared machine; 1000 / (CPU ms per request) is the req/s one core would sustain.", "",
           "| Target | req/s @16 | req/s @64 | **max req/s** | p99 @64 (ms) | CPU ms/req (proxy + redis) | "
           "req/s per core from CPU |", "|---|---|---|---|---|---|---|"]
    for n, c in t["closed"].items():
        runs = c["runs"]
        med = c["rps_median"]
        p99 = sorted(x["lat_ms"].get("p99") or 0 for x in runs["64"])[len(runs["64"]) // 2]
        cpu = c.get("cpu_ms_per_req") or {}
        tot = (cpu.get("proxy") or 0) + (cpu.get("redis") or 0)
        out.append(f"| {NAMES.get(n, n)} | {f(med['16'], 0)} | {f(med['64'], 0)} | "
                   f"**{f(c['max_rps'], 0)}** | {f(p99)} | {f(cpu.get('proxy'), 3)} + {f(cpu.get('redis'), 3)} | "
                   f"{f(1000 / tot if tot else None, 0)} |")
    rates = sorted({int(k) for runs in t["open"].values() for k in runs})
    out += ["", "Open loop at fixed rates; latency from each request's *scheduled* send time "
            "(no coordinated omission). p50 / p99 in ms; ✗ = saturated (backlog took > 1.25× the run to drain, "
            "> 1% errors or p99 > 1 s), "
            "higher rates then skipped.", "",
            "| Target | " + " | ".join(f"{x}/s" for x in rates) + " |", "|---" * (len(rates) + 1) + "|"]
    for n, runs in t["open"].items():
        cells = []
        for x in rates:
            v = runs.get(str(x))
            if v is None:
                cells.append("–")
            else:
                cells.append(f"{f(v['lat_ms'].get('p50'))} / {f(v['lat_ms'].get('p99'))}" + (" ✗" if v["saturated"] else ""))
        out.append(f"| {NAMES.get(n, n)} | " + " | ".join(cells) + " |")
    out += ["", "![latency vs offered load](benchmarks_latency.png)", ""]
    lat = t.get("latency_200ms") or {}
    if lat:
        out += ["200 ms upstream latency, closed loop with N connections (N from 16 upward). *No errors*: the "
                "largest N with every request answered; the ramp stops at the first error or p99 > 5 s. *Held*: "
                "largest N, reached without a gap, with 0 errors and p99 < 1 s.", "",
                "| Target | max N, no errors | req/s there | p99 there (ms) | max N held (p99 < 1 s) | req/s there |",
                "|---|---|---|---|---|---|"]
        for n, v in lat.items():
            ne = v["runs"].get(str(v.get("max_concurrency_no_errors")), {})
            held = v["runs"].get(str(v["max_concurrency_held"]), {})
            out.append(f"| {NAMES.get(n, n)} | {f(v.get('max_concurrency_no_errors'))} | {f(ne.get('rps'), 0)} | "
                       f"{f(g(ne, 'lat_ms', 'p99'))} | {f(v['max_concurrency_held'])} | {f(held.get('rps'), 0)} |")
        out.append("")
    return out


def streaming_section(r: dict[str, Any]) -> list[str]:
    s = r.get("streaming")
    if not s:
        return []
    st = s["settings"]
    out = ["## Streaming", "",
           f"Mock: {st['chunks']} content chunks, {st['ttft_ms']} ms to first token, {st['itl_ms']} ms apart. "
           f"Sequential (c=1), {s['rounds']} rounds × {s['n_per_round']} streams, interleaved with direct; "
           "and 32 concurrent streams.", "",
           "| Target | TTFT p50 (ms) | TTFT overhead (ms) | gap stdev c=1 (ms) | gap p99 c=1 (ms) | "
           "TTFT p50 c=32 | gap stdev c=32 | gap p99 c=32 |", "|---|---|---|---|---|---|---|---|"]
    for n, v in s["c1"].items():
        c32 = s["c32"].get(n, {})
        out.append(f"| {NAMES.get(n, n)} | {spread_s(v['ttft_p50_ms'])} | {spread_s(v.get('ttft_overhead_ms'))} | "
                   f"{spread_s(v['gap_stdev_ms'])} | {spread_s(v['gap_p99_ms'])} | {f(g(c32, 'ttft_ms', 'p50'))} | "
                   f"{f(g(c32, 'gap_ms', 'stdev'), 2)} | {f(g(c32, 'gap_ms', 'p99'))} |")
    return out + [""]


def memory_section(r: dict[str, Any]) -> list[str]:
    m = r.get("memory")
    if not m:
        return []
    out = ["## Memory (RSS per worker)", "",
           "Closed loop, 32 connections, alternating non-streamed and streamed chunks of requests; RSS of the "
           "worker process from psutil. LiteLLM's share is capped in wall time, so it serves fewer requests.", "",
           "| Proxy | after warm-up (MB) | before this phase | after (MB) | requests | growth over 2nd half (MB) | "
           "end of run (MB) |", "|---|---|---|---|---|---|---|"]
    for n in PROXIES:
        v = m.get(n)
        if v:
            out.append(f"| {NAMES[n]} | {mb(v.get('warm_rss_mb'))} | {mb(v['rss_before_mb'])} | {mb(v['rss_after_mb'])} | "
                       f"{f(v['requests'])} | {f(v.get('growth_second_half_mb'))} | {mb(g(r, 'rss_end', n))} |")
    return out + ["", "End of run is after every later phase, including 1,024 concurrent connections at 200 ms "
                  "upstream latency: the allocator keeps that high-water mark.", ""]


def race_section(r: dict[str, Any]) -> list[str]:
    b = r.get("race")
    if not b:
        return []
    out = ["## Budget race", "",
           f"{b['workers']} Triage workers sharing one Redis; one key with a ${b['limit_usd']:.2f} total budget; "
           f"{b['concurrent']} concurrent requests, each costing exactly ${b['cost_per_request_usd']:.2f} "
           "(estimate = actual: free input tokens, max_tokens = 20, the mock answers 20 tokens at $0.0005). "
           "A refusal is false if the budget still had room for it after everything settled. "
           "LiteLLM's proxy needs its database for key budgets, so it has no entry here.", "",
           "| upstream latency | streamed | admitted | refused (budget) | other errors | spent | overspend | "
           "false refusals |", "|---|---|---|---|---|---|---|---|"]
    for t in b["trials"]:
        out.append(f"| {t['latency_ms']} ms | {'yes' if t['stream'] else 'no'} | {t['admitted']} | {t['refused_budget']} | "
                   f"{t['other_errors']} | ${t['spent_usd']:.4f} | ${t['overspend_usd']:.4f} | {t['false_refusals']} |")
    return out + [""]


def classifier_section(r: dict[str, Any]) -> list[str]:
    c = r.get("classifier")
    if not c or "error" in c:
        return []
    return ["## Classifier (in process, `bench/classifier_bench.py`)", "",
            "| single p50 (ms) | single p99 (ms) | batch (prompts/s) | 1 MB prompt (ms) | load (ms) |",
            "|---|---|---|---|---|",
            f"| {c['single_p50_ms']} | {c['single_p99_ms']} | {f(c['batch_prompts_per_s'])} | "
            f"{c['one_mb_prompt_ms']} | {c['load_ms']} |", ""]


def profile_section(r: dict[str, Any], notes: str) -> list[str]:
    prof = r.get("profile")
    if not prof or "error" in prof:
        return []
    levels = {k: v for k, v in prof.items() if k.startswith("c") and isinstance(v, dict)} if "c1" in prof else {"c32": prof}
    out = ["## Profile: Triage governed under load", ""]
    stage_names = sorted({s for p in levels.values() for s in p.get("stages_pct", {})})
    if stage_names:
        out += ["Per stage, percent of the worker's samples (bench/hotspots.py STAGES: innermost matching frame):", "",
                "| stage | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
        for s in stage_names:
            out.append(f"| {s} | " + " | ".join(str(p.get("stages_pct", {}).get(s, 0)) for p in levels.values()) + " |")
        out.append("")
    for lvl, p in levels.items():
        if "error" in p:
            continue
        out += [f"### {lvl}", "",
                f"py-spy, {p['seconds']} s at {p['rate_hz']} Hz on the worker (pid {p['pid']}) while it served "
                f"{f(p.get('rps_during'), 0)} req/s (closed loop, {p.get('concurrency', 32)} connections); worker busy "
                f"{p['cpu_busy_pct']}% of samples. Percent of samples.", "",
                "| self % | function (self time) | | incl. % | Triage function (inclusive) |", "|---|---|---|---|---|"]
        for a, b in zip(p["self"][:15], p["inclusive"][:15]):
            out.append(f"| {a['pct']} | `{a['function']}` | | {b['pct']} | `{b['function']}` |")
        if p.get("by_package"):
            out += ["", "Self time by package: " + ", ".join(f"{x['function']} {x['pct']}%" for x in p["by_package"][:12]) + "."]
        out.append("")
    if notes:
        out += ["", notes]
    return out + [""]


def render(r: dict[str, Any], results_rel: str, notes: str = "") -> str:
    m, v = r["machine"], r["versions"]
    lines = [
        "# Benchmarks: Triage vs LiteLLM's proxy", "",
        "<!-- generated by bench/report.py from " + results_rel + "; edit bench/notes.md for the prose -->", "",
        f"Measured {r['started_utc']} on one machine, same run, same simulated upstream, **one worker each**. "
        "Only the ratios between the proxies carry over to other hardware.", "",
        "*Bare*: auth is the only governance (master key, concrete model `small`). *Governed*: what users run — "
        "a budgeted client key, `triage/auto` (classifier + policy), budget admission and settlement in Redis, "
        "ledger, streaming metering. LiteLLM: master key, no database, same model list.", "",
    ]
    lines += summary(r) + [""]
    lines += ["## Rerun", "", "```bash", ".venv/bin/pip install -e '.[bench]'", ".venv/bin/" + r["command"],
              "```", "", "`--quick` finishes in a few minutes; `--only overhead,throughput,...` runs a subset. The "
              "first run installs `litellm[proxy]` into `bench/.venv-litellm`.", "",
              "Processes started by the harness:", "", "```"]
    lines += [f"{k}: {c}" for k, c in (r.get("processes") or {}).items()]
    lines += ["```", "",
              f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB, {m['kernel']}, Python {m['python']}; "
              "shared and noisy (other jobs ran during the measurement). Load generator: `bench/loadgen.py`, "
              "raw asyncio + uvloop keep-alive client in its own process, on the same 2 cores as the mock and "
              "the proxy (about 20k req/s against the mock, so it is not the bottleneck; wrk is not needed). "
              "Nothing is pinned to a core.", "",
              "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    for sec in (overhead_section(r), throughput_section(r), streaming_section(r), memory_section(r),
                race_section(r), classifier_section(r), profile_section(r, notes)):
        lines += sec
    if r.get("errors"):
        lines += ["## Sections that failed in this run", ""] + [f"- {k}: {e}" for k, e in r["errors"].items()] + [""]
    return "\n".join(lines)


def write(r: dict[str, Any], results_path: Path) -> None:
    notes_file = Path(__file__).resolve().parent / "notes.md"
    notes = notes_file.read_text() if notes_file.exists() else ""
    try:
        rel = str(results_path.resolve().relative_to(ROOT))
    except ValueError:
        rel = str(results_path)
    plot(r)
    DOC.write_text(render(r, rel, notes))


if __name__ == "__main__":
    p = Path(sys.argv[1])
    write(json.loads(p.read_text()), p)
