"""Run a code answer on the calls its prompt implies, in a locked-down child process (offline only).

Used by `triage cascade score --run-code` to compare code answers by their outputs ("the same
outputs on inputs derived from the prompt") and by the prompt's own asserts. It executes
model-written code, so it is opt-in and never used by the gateway. The child:
  * is a fresh `python -I` in an empty temporary directory with an empty environment,
  * has CPU, memory, file-size (no file writes), process-count and open-file limits,
  * installs an audit hook that refuses process creation, network, file writes/removal,
    ctypes and imports of modules that do those,
  * is killed after a wall-clock timeout.
That stops accidents and ordinary misbehaviour of benchmark answers; it is not a security
boundary against code written to escape.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

TIMEOUT_S = 5.0
OUT_CHARS = 300

_CHILD = r'''
import json, resource, sys
resource.setrlimit(resource.RLIMIT_CPU, (3, 3))
resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
except (ValueError, OSError):
    pass
job = json.loads(sys.stdin.read())
_BLOCK = ("subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.kill", "socket.",
          "os.remove", "os.unlink", "os.rmdir", "os.rename", "os.replace", "shutil.", "ctypes.", "os.chmod",
          "os.chown", "os.truncate", "os.link", "os.symlink", "os.mkdir", "os.putenv", "webbrowser.", "urllib.")
_NOIMPORT = {"subprocess", "socket", "ctypes", "multiprocessing", "shutil", "urllib", "http", "ftplib", "smtplib",
             "pty", "webbrowser"}
def _hook(event, args):
    if event.startswith(_BLOCK):
        raise PermissionError("blocked: " + event)
    if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
        raise PermissionError("blocked: write")
    if event == "open" and len(args) > 2 and isinstance(args[2], int) and args[2] & 0o3:
        raise PermissionError("blocked: write")
    if event == "import" and args and str(args[0]).split(".")[0] in _NOIMPORT:
        raise PermissionError("blocked import: " + str(args[0]))
import io, contextlib
sys.addaudithook(_hook)
ns = {"__name__": "answer"}
res = []
try:
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(job["code"], "<answer>", "exec"), ns)
except BaseException as e:
    print(json.dumps({"error": type(e).__name__}))
    sys.exit(0)
for p in job["probes"]:
    r = {"out": None, "ok": None}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            v = eval(p["call"], ns)
        r["out"] = repr(v)[:%d]
        if "expect_repr" in p:
            r["ok"] = r["out"].strip() == p["expect_repr"].strip()
    except BaseException as e:
        r["out"] = "!" + type(e).__name__
        if "expect_repr" in p:
            r["ok"] = False
    if "test" in p:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                r["ok"] = bool(eval(p["test"], ns))
        except BaseException:
            r["ok"] = False
    res.append(r)
print(json.dumps({"results": res}))
''' % OUT_CHARS


def run_code(code: str, probes: list[dict[str, str]]) -> list[dict[str, Any]] | None:
    """One result per probe ({"out": repr or "!Error", "ok": passed its test or None}); a
    definition that does not even run gives results with out "!<Error>"; None on timeout."""
    if not probes:
        return []
    with tempfile.TemporaryDirectory(prefix="triage-run-") as tmp:
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", _CHILD], input=json.dumps({"code": code, "probes": probes}),
                                  capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp,
                                  env={"PATH": os.defpath, "PYTHONHASHSEED": "0"})
        except subprocess.TimeoutExpired:
            return None
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # the CPU limit is a timeout too
        return None
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [{"out": "!Crash", "ok": False if ("test" in p or "expect_repr" in p) else None} for p in probes]
    if "error" in out:
        return [{"out": "!" + out["error"], "ok": False if ("test" in p or "expect_repr" in p) else None} for p in probes]
    return out.get("results")
