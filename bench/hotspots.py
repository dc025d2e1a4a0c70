"""Sampling profile of a Triage worker under closed-loop load (py-spy), folded into top-N tables.

Percentages are of the worker's sampled, non-idle stacks: where its CPU goes
while it serves at its maximum rate.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sections import loadgen

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3." and "/" in tail else tail
    for pkg in ("/router/", "/accounting/", "/classifier/", "/simulator/", "/bench/"):  # any checkout
        if pkg in path:
            return pkg[1:] + path.rsplit(pkg, 1)[1]
    return path


def _py_spy() -> str | None:
    cand = Path(sys.executable).parent / "py-spy"
    return str(cand) if cand.exists() else shutil.which("py-spy")


_OURS = ("router/", "accounting/", "classifier/")
_LIBS = ("starlette/", "fastapi/", "pydantic/", "redis/", "aiohttp/", "uvicorn/", "orjson")


def _pkg(name: str) -> str:
    inner = name[name.rfind("(") + 1:-1]
    return inner.split("/", 1)[0].removesuffix(".py") if "/" in inner else inner.removesuffix(".py")


def fold(raw: str, top: int = 20) -> dict[str, Any]:
    """Self time per function, self time per package, and inclusive time of our own and the
    web/redis/http libraries' functions (leaving out the wrappers every request passes through)."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    pkg_c: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        names = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr.strip())
            if m:  # skips process/thread labels (py-spy --threads/--pid variants)
                names.append(f"{m['fn']} ({_short(m['file'])})")
        if not names:
            continue
        self_c[names[-1]] += n
        pkg_c[_pkg(names[-1])] += n
        for name in set(names):
            incl_c[name] += n
    total = max(total, 1)
    # our own steps only: the web framework's wrappers would fill the list with ~everything
    incl_c = Counter({k: v for k, v in incl_c.items()
                      if any(f"({m}" in k for m in _OURS) and "router/cli.py" not in k})
    pct = lambda c: [{"function": k, "pct": round(100 * v / total, 1)} for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "self": pct(self_c), "inclusive": pct(incl_c), "by_package": pct(pkg_c)}


# Stage of a sample: the innermost frame that names one (checked innermost first), so the
# accountant's Redis calls inside settle count as settle, not as the handler around them.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # the accountant's pipelined connection (accounting/script_batch.py) writes and reads from loop
    # callbacks, outside the admit/settle frames of the requests whose calls it carries
    ("admit+settle, batched", ("_flush (accounting/script_batch.py)", "data_received (accounting/script_batch.py)",
                               "_connect (accounting/script_batch.py)", "_expire (accounting/script_batch.py)")),
    ("ledger", ("record (router/http/meta.py)", "top_tier_nusd", "model_dump_json", "LedgerRecord", "top_lengths")),
    ("settle", ("settle (accounting/", "release (accounting/", "_finish (router/http/chat.py)")),
    ("admit", ("admit (accounting/", "LeaseKeeper", "HoldRenewer", "_run (router/http/metering.py)")),
    ("auth", ("authenticate (", "authenticate_headers (")),
    ("classify", ("(classifier/",)),
    ("decide", ("decide (router/policy.py)", "(router/policy.py)", "PlanEstimate", "estimate_prompt_tokens")),
    ("upstream", ("(router/upstream/", "(aiohttp/", "complete (router/tiers/")),
    ("HTTP parse", ("read_json", "read_body", "validate_chat", "(router/http/request.py)", "on_url", "on_header",
                    "on_headers_complete", "on_body", "on_message_complete", "data_received", "hot_headers")),
    ("response", ("headers (router/http/chat.py)", "answer_headers", "(router/http/asgi.py)", "(starlette/responses.py)",
                  "send (uvicorn/", "(uvicorn/protocols")),
    ("metrics", ("(router/observe/", "(prometheus_client/")),
    ("handler", ("__call__ (router/http/chat.py)", "(router/http/")),
)


def stages(raw: str) -> dict[str, float]:
    """Percent of the worker's non-idle samples per pipeline stage (see STAGES)."""
    c: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr.strip())
            if m:
                frames.append(f"{m['fn']} ({_short(m['file'])})")
        stage = "event loop / other"
        for fr in reversed(frames):
            hit = next((name for name, marks in STAGES if any(m in fr for m in marks)), None)
            if hit is not None:
                stage = hit
                break
        c[stage] += n
    return {k: round(100 * v / max(total, 1), 1) for k, v in c.most_common()}


def run(ctx: Any, name: str = "triage-governed", seconds: int = 15) -> dict[str, Any]:
    return {f"c{conc}": _run(ctx, name, seconds, conc) for conc in (1, 16)}


def _run(ctx: Any, name: str, seconds: int, concurrency: int) -> dict[str, Any]:
    spy = _py_spy()
    if spy is None:
        return {"error": "py-spy not found (pip install py-spy)"}
    workers = ctx.procs[name].workers()
    if not workers:
        return {"error": f"no worker process for {name}"}
    pid = workers[0].pid
    out = ctx.logdir / f"profile-{name}-c{concurrency}.txt"
    load: dict[str, Any] = {}

    def drive() -> None:
        load.update(loadgen({"mode": "closed", "concurrency": concurrency, "duration": seconds + 2, "warmup": 1,
                             "target": ctx.target(name)}))

    th = threading.Thread(target=drive)
    th.start()
    time.sleep(1.0)
    r = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
                        "--format", "raw", "--nonblocking", "-o", str(out)], capture_output=True, text=True)
    th.join()
    if r.returncode != 0 or not out.exists():
        return {"error": (r.stderr or r.stdout)[-1500:]}
    res = fold(out.read_text())
    res["stages_pct"] = stages(out.read_text())
    res.update(concurrency=concurrency, target=name, pid=pid, seconds=seconds, rate_hz=250, rps_during=load.get("rps"),
               cpu_busy_pct=round(100 * res["samples"] / (seconds * 250), 1))
    return res


if __name__ == "__main__":  # fold an existing raw profile: python bench/hotspots.py FILE
    import json

    text = Path(sys.argv[1]).read_text()
    print(json.dumps({**fold(text), "stages_pct": stages(text)}, indent=1))
