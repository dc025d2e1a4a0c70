"""Rerun every benchmark figure in docs/benchmarks.md: Triage (bare, governed) vs LiteLLM's proxy.

    python bench/run.py [--quick] [--only ceiling,overhead,throughput,streaming,memory,classifier,race,profile]
                        [--skip litellm] [--memory-requests N]

Starts the simulated upstream, Triage twice (bare and governed configs, one
worker each), LiteLLM's proxy (one worker, its own venv in bench/.venv-litellm,
installed on first use), then measures. Writes bench/results/<date>.json and,
for a full run (or --docs), docs/benchmarks.md and docs/benchmarks_latency.png.
Everything runs on this machine, 127.0.0.1 only. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import procs  # noqa: E402
import sections  # noqa: E402
from procs import BENCH, ROOT, http  # noqa: E402

# memory before throughput: its 1,024-connection phases raise every proxy's RSS high-water mark,
# which the end-of-run RSS (rss_end) reports separately
SECTIONS = ("ceiling", "overhead", "streaming", "memory", "throughput", "classifier", "profile", "race")
PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "In two sentences, explain why the sky is blue to a ten-year-old."}]
MODEL = {"direct": "gpt-4o-mini", "forwarder": "gpt-4o-mini", "triage-baseline": "triage/auto", "triage-bare": "small", "triage-governed": "triage/auto", "litellm": "small"}


class Ctx:
    def __init__(self, quick: bool, logdir: Path, memory_requests: int | None = None):
        self.quick = quick
        self.memory_requests = memory_requests
        self.baseline: Path | None = None
        self.logdir = logdir
        self.run_id = datetime.now(timezone.utc).strftime("%H%M%S")
        self.procs: dict[str, procs.Proc] = {}
        self.keys: dict[str, str] = {}
        self.warm_rss: dict[str, list[float]] = {}
        self.env = {"BENCH_MASTER_KEY": "sk-bench-master-" + os.urandom(8).hex(), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.0f}s] {msg}", flush=True)

    def target(self, name: str, stream: bool = False) -> dict[str, Any]:
        p = self.procs["mock" if name == "direct" else name]
        body: dict[str, Any] = {"model": MODEL[name], "messages": PROMPT}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        headers = {"authorization": f"Bearer {self.keys[name]}"} if name in self.keys else {}
        return {"port": p.port, "path": "/v1/chat/completions", "headers": headers, "body": body}


def start_all(ctx: Ctx) -> None:
    mock = procs.start_mock(ctx.logdir)
    ctx.procs["mock"] = mock
    mock.wait_ready(30)
    ctx.env["BENCH_MOCK_BASE"] = mock.url + "/v1"
    # the ceiling: what a proxy that does nothing but forward costs, under the same uvicorn
    ctx.procs["forwarder"] = procs.start_forwarder(ctx.logdir, mock.url)
    if "triage-bare" in sections.PROXIES:
        ctx.procs["triage-bare"] = procs.start_triage("triage-bare", "bare.yaml", 1, ctx.logdir, ctx.env)
    ctx.procs["triage-governed"] = procs.start_triage("triage-governed", "governed.yaml", 1, ctx.logdir, ctx.env)
    if ctx.baseline is not None:
        ctx.procs["triage-baseline"] = procs.start_triage("triage-baseline", "governed.yaml", 1, ctx.logdir, ctx.env,
                                                          root=ctx.baseline)
        ctx.log(f"triage-baseline ready in {ctx.procs['triage-baseline'].wait_ready(240):.1f}s")
    if "litellm" in sections.PROXIES:
        ctx.procs["litellm"] = procs.start_litellm(1, ctx.logdir, ctx.env)
    for name in ("forwarder", *sections.PROXIES):
        ctx.log(f"{name} ready in {ctx.procs[name].wait_ready(240):.1f}s (port {ctx.procs[name].port})")
    master = ctx.env["BENCH_MASTER_KEY"]
    ctx.keys["triage-bare"] = ctx.keys["litellm"] = master
    st, key = http("POST", ctx.procs["triage-governed"].url + "/admin/keys",
                   {"tenant": f"bench-{ctx.run_id}", "budget_usd": 100000.0, "period": "total"}, master)
    if st not in (200, 201):
        raise RuntimeError(f"creating the governed client key failed: {st} {key}")
    ctx.keys["triage-governed"] = key["key"]
    if "triage-baseline" in ctx.procs:
        st, key = http("POST", ctx.procs["triage-baseline"].url + "/admin/keys",
                       {"tenant": f"bench-{ctx.run_id}", "budget_usd": 100000.0, "period": "total"}, master)
        if st not in (200, 201):
            raise RuntimeError(f"creating the baseline client key failed: {st} {key}")
        ctx.keys["triage-baseline"] = key["key"]


def smoke(ctx: Ctx) -> dict[str, Any]:
    """One non-stream and one stream request per proxy through the openai SDK: proves the wiring end to end."""
    from openai import OpenAI

    out: dict[str, Any] = {}
    for name in sections.PROXIES:
        c = OpenAI(base_url=ctx.procs[name].url + "/v1", api_key=ctx.keys[name], max_retries=0, timeout=30)
        raw = c.chat.completions.with_raw_response.create(model=MODEL[name], messages=PROMPT)
        resp = raw.parse()
        chunks = list(c.chat.completions.create(model=MODEL[name], messages=PROMPT, stream=True,
                                                stream_options={"include_usage": True}))
        out[name] = {"tier": raw.headers.get("x-triage-tier"), "model": raw.headers.get("x-triage-model"),
                     "decision": raw.headers.get("x-triage-decision"), "cost": raw.headers.get("x-triage-cost-usd"),
                     "completion_tokens": resp.usage.completion_tokens if resp.usage else None,
                     "stream_chunks": len(chunks),
                     "stream_usage": bool(chunks and chunks[-1].usage is not None)}
        ctx.log(f"smoke {name}: {out[name]}")
    return out


def warm_up(ctx: Ctx) -> None:
    for name in sections.PROXIES:
        sections.loadgen({"mode": "closed", "concurrency": 16, "duration": 3, "warmup": 0, "target": ctx.target(name)})
        sections.loadgen({"mode": "closed", "concurrency": 16, "duration": 1, "warmup": 0,
                          "target": ctx.target(name, stream=True)})
        ctx.warm_rss[name] = ctx.procs[name].rss_mb()
        ctx.log(f"warm RSS {name}: {ctx.warm_rss[name]} MB")


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    def v(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"triage_commit": commit, "triage": v("triage-gateway"), "litellm_proxy": procs.litellm_version(),
            "uvicorn": v("uvicorn"), "uvloop": v("uvloop"), "fastapi": v("fastapi"), "redis_py": v("redis"),
            "orjson": v("orjson"), "python": sys.version.split()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (a few minutes); results marked quick")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(SECTIONS))
    ap.add_argument("--docs", action="store_true", help="write docs even for --quick/--only runs")
    ap.add_argument("--skip", default="", help="comma-separated proxies not to start: triage-bare, litellm")
    ap.add_argument("--memory-requests", type=int, default=None, help="requests per proxy in the memory section")
    ap.add_argument("--baseline", default=None, help="another checkout (e.g. a git worktree at the commit before a "
                    "change) whose governed Triage the ceiling section measures beside this one")
    ap.add_argument("--out", default=None, help="results file (default bench/results/<date>[-quick].json)")
    a = ap.parse_args()
    only = [s for s in a.only.split(",") if s] or list(SECTIONS)
    skip = {s for s in a.skip.split(",") if s}
    if skip - {"triage-bare", "litellm"}:
        ap.error("--skip takes triage-bare and/or litellm")
    sections.PROXIES = tuple(p for p in sections.PROXIES if p not in skip)
    bad = set(only) - set(SECTIONS)
    if bad:
        ap.error(f"unknown sections: {sorted(bad)}")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out_path = Path(a.out) if a.out else BENCH / "results" / f"{date}{'-quick' if a.quick else ''}.json"
    logdir = Path(os.environ.get("BENCH_LOGDIR", f"/tmp/triage-bench-{os.getpid()}"))
    logdir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(a.quick, logdir, a.memory_requests)
    ctx.baseline = Path(a.baseline).resolve() if a.baseline else None
    if "litellm" in sections.PROXIES:
        procs.ensure_litellm_venv(ctx.log)
    results: dict[str, Any] = {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": a.quick,
        "sections": only, "machine": procs.machine(), "versions": versions(),
        "command": "python bench/run.py" + (" --quick" if a.quick else "") + (f" --only {a.only}" if a.only else "")
                   + (f" --skip {a.skip}" if a.skip else "") + (" --baseline DIR" if a.baseline else "")
                   + (f" --memory-requests {a.memory_requests}" if a.memory_requests else ""),
        "workers": 1, "prompt": PROMPT, "models": MODEL, "logdir": str(logdir), "errors": {},
    }
    try:
        start_all(ctx)
        results["processes"] = {n: " ".join(p.cmd).replace(str(ROOT) + "/", "") for n, p in ctx.procs.items()}
        results["smoke"] = smoke(ctx)
        warm_up(ctx)
        for name in only:
            ctx.log(f"== {name}")
            try:
                if name == "race":
                    import race

                    results[name] = race.run(ctx)
                elif name == "ceiling":
                    import ceiling

                    results[name] = ceiling.run(ctx)
                elif name == "profile":
                    import hotspots

                    results[name] = hotspots.run(ctx)
                else:
                    results[name] = getattr(sections, name)(ctx)
            except Exception as e:  # one failing section must not cost the others' figures
                results["errors"][name] = f"{type(e).__name__}: {e}"
                ctx.log(f"section {name} failed:\n{traceback.format_exc()}")
            _save(out_path, results)
        results["rss_end"] = {n: ctx.procs[n].rss_mb() for n in sections.PROXIES}
    finally:
        for p in reversed(list(ctx.procs.values())):
            p.stop()
    results["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["duration_s"] = round(time.monotonic() - ctx.t0)
    _save(out_path, results)
    ctx.log(f"results: {out_path}")
    if (not a.quick and not a.only) or a.docs:
        import report

        report.write(results, out_path)
        ctx.log("wrote docs/benchmarks.md and docs/benchmarks_latency.png")


def _save(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    main()
