"""Starting, probing and stopping the processes under test (mock, Triage, LiteLLM), and their RSS.

Every process is started in its own session so stopping it takes its children
(uvicorn workers, the embedded redis-server) with it, by process-group id.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = os.environ.get("BENCH_LITELLM_SPEC", "litellm[proxy]==1.106.2")  # pinned: ratios comparable across reruns


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, payload: Any = None, key: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


class Proc:
    """One started server: a process group, a port, a log file."""

    def __init__(self, name: str, cmd: list[str], port: int, health: str, env: dict[str, str], logdir: Path,
                 cwd: Path = ROOT):
        self.name, self.cmd, self.port, self.health = name, cmd, port, health
        self.log_path = logdir / f"{name}.log"
        full_env = {**os.environ, **env}
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
                                  cwd=str(cwd), start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.p.returncode}); see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            try:
                st, _ = http("GET", self.url + self.health, timeout=2)
                if st == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def workers(self) -> list[psutil.Process]:
        """Worker processes: python processes in the tree with no python children (skips redis, the uvicorn supervisor)."""
        try:
            root = psutil.Process(self.p.pid)
            tree = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        py = [p for p in tree if "redis" not in p.name() and "resource_tracker" not in " ".join(p.cmdline())]
        return [p for p in py if not any(c in py for c in p.children())]

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user+system) so far of the process tree, split into redis and the rest."""
        out = {"proxy": 0.0, "redis": 0.0}
        try:
            root = psutil.Process(self.p.pid)
            tree = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return out
        for p in tree:
            try:
                t = p.cpu_times()
                out["redis" if "redis" in p.name() else "proxy"] += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return out

    def rss_mb(self) -> list[float]:
        out = []
        for w in self.workers():
            try:
                out.append(round(w.memory_info().rss / 2**20, 1))
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # stragglers in the group (workers, redis)
        except ProcessLookupError:
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


def start_mock(logdir: Path) -> Proc:
    port = free_port()
    return Proc("mock", [sys.executable, "-m", "router.cli", "mock-upstream", "--port", str(port)],
                port, "/health", {}, logdir)


def start_triage(name: str, config: str, workers: int, logdir: Path, env: dict[str, str], root: Path = ROOT) -> Proc:
    """``root``: another checkout of Triage to run (``python -m`` imports from the working directory),
    e.g. the commit before a change, so before and after are measured in the same run."""
    port = free_port()
    state = logdir / f"state-{name}"
    state.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "router.cli", "serve", "--config", str(BENCH / "configs" / config),
           "--port", str(port), "--workers", str(workers), "--state-dir", str(state)]
    return Proc(name, cmd, port, "/healthz", env, logdir, cwd=root)


def start_forwarder(logdir: Path, upstream: str) -> Proc:
    port = free_port()
    return Proc("forwarder", [sys.executable, str(BENCH / "forwarder.py"), "--port", str(port), "--upstream", upstream],
                port, "/healthz", {}, logdir)


def ensure_litellm_venv(log: Any = print) -> Path:
    """Create bench/.venv-litellm and install LiteLLM's proxy there, once."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (one-time, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + [LITELLM_SPEC], check=True)
    return exe


def litellm_version() -> str:
    if not (LITELLM_VENV / "bin" / "python").exists():
        return "-"
    r = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def start_litellm(workers: int, logdir: Path, env: dict[str, str]) -> Proc:
    port = free_port()
    exe = ensure_litellm_venv()
    cmd = [str(exe), "--config", str(BENCH / "configs" / "litellm.yaml"), "--host", "127.0.0.1",
           "--port", str(port), "--num_workers", str(workers)]
    # LITELLM_LOG=ERROR is LiteLLM's production recommendation; Triage logs at warning.
    env = {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    return Proc("litellm", cmd, port, "/health/liveliness", env, logdir)


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    u = os.uname()
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": f"{u.sysname} {u.release}", "python": sys.version.split()[0]}
