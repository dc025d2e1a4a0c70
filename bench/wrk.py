"""wrk (Debian's package) as the load generator: the tool the issue's side-by-side check uses.

A C load generator leaves the 2 cores to the servers under test, where bench/loadgen.py (Python,
asyncio) takes a share itself. Used by the ceiling section when `wrk` is on PATH.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def _script(target: dict[str, Any], dirpath: Path) -> Path:
    lines = ['wrk.method = "POST"' if target.get("body") is not None else 'wrk.method = "GET"']
    if target.get("body") is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(target['body']))}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    for k, v in (target.get("headers") or {}).items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    if target.get("vary") and target.get("body") is not None:
        # every request's last message ends differently, so nothing keyed on the text (token counts,
        # caches) is reused: what a stream of distinct prompts costs
        head, sep, tail = json.dumps(target["body"]).rpartition('"}')
        if not sep:
            raise ValueError("vary needs a body whose last message content is a string")
        lines += ["local n = 0", "request = function()", "  n = n + 1",
                  f"  return wrk.format(nil, nil, nil, {json.dumps(head)} .. ' #' .. n .. {json.dumps(sep + tail)})",
                  "end"]
    p = dirpath / "req.lua"
    p.write_text("\n".join(lines) + "\n")
    return p


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"unparsed wrk latency {text!r}")
    return float(m[1]) * _UNIT_MS[m[2]]


def parse(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {"rps": None, "p50_ms": None, "p99_ms": None, "requests": 0, "non_2xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            res["rps"] = float(s.split()[1])
        elif s.startswith("50%"):
            res["p50_ms"] = _ms(s.split()[1])
        elif s.startswith("99%"):
            res["p99_ms"] = _ms(s.split()[1])
        elif "requests in" in s:
            res["requests"] = int(s.split()[0])
        elif s.startswith("Non-2xx"):
            res["non_2xx"] = int(s.split()[-1])
        elif s.startswith("Socket errors"):
            res["socket_errors"] = sum(int(x) for x in re.findall(r"\d+", s))
    return res


def run(target: dict[str, Any], concurrency: int, seconds: float, host: str = "127.0.0.1") -> dict[str, Any]:
    """One wrk run (one thread, `concurrency` keep-alive connections) against a loadgen-style target."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as d:
        script = _script(target, Path(d))
        url = f"http://{target.get('host', host)}:{target['port']}{target['path']}"
        r = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
                            "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr[-1000:]}")
    res = parse(r.stdout)
    res["errors"] = res["non_2xx"] + res["socket_errors"]
    return res
