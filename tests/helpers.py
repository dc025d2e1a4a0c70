"""Small helpers shared by tests that run `triage serve` as a real process."""

from __future__ import annotations

import subprocess
import time
from typing import Callable

import httpx


def wait_ready(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0,
               why: Callable[[], str] = lambda: "") -> None:
    """Poll /readyz until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            assert proc.poll() is None, f"proxy exited: {why()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"proxy on :{port} did not become ready in {timeout}s {why()}"
        time.sleep(0.2)
