"""Running the mock upstream: ``serve`` (CLI, foreground) and ``MockServer`` (tests, benches).

``MockServer`` runs uvicorn in a background thread (default; ``.state`` is
then the live :class:`~simulator.state.MockState`) or in a subprocess
(``mode="process"``, for benchmarks, so the mock does not share the GIL with
the code under test). Either way it listens on a free 127.0.0.1 port and
``.base_url`` is ``http://127.0.0.1:PORT/v1``.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.state import MockSettings, MockState


def _config(app: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="off",
        access_log=False, log_level=log_level, backlog=4096, timeout_keep_alive=60,
        timeout_graceful_shutdown=2,
    )


def serve(host: str = "127.0.0.1", port: int = 8001, settings: MockSettings | None = None,
          log_level: str = "warning") -> None:
    """Run the mock in the foreground until interrupted (``triage mock-upstream``)."""
    import uvicorn

    from simulator.app import build_app

    uvicorn.Server(_config(build_app(settings), host, port, log_level)).run()


class MockServer:
    """Context manager running the mock on a free 127.0.0.1 port."""

    def __init__(self, settings: MockSettings | None = None, *, mode: str = "thread",
                 log_level: str = "critical"):
        if mode not in ("thread", "process"):
            raise ValueError("mode must be 'thread' or 'process'")
        self.settings = settings
        self.mode = mode
        self.log_level = log_level
        self.port = 0
        self.app: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def state(self) -> MockState:
        if self.app is None:
            raise RuntimeError("state is only shared in thread mode; use stats()/settings over HTTP")
        return self.app.state

    def start(self) -> MockServer:
        if self.mode == "thread":
            self._start_thread()
        else:
            self._start_process()
        return self

    def _start_thread(self) -> None:
        import uvicorn

        from simulator.app import build_app

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.app = build_app(self.settings)
        self._server = uvicorn.Server(_config(self.app, "127.0.0.1", self.port, self.log_level))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"mock-upstream-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("mock upstream failed to start")
            time.sleep(0.005)

    def _start_process(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "simulator.server", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.settings is not None:
            cmd += ["--settings-json", json.dumps(dataclasses.asdict(self.settings))]
        self._proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/health")
                return
            except (OSError, urllib.error.URLError):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mock upstream process failed to start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(10)
            self._server = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control API helpers (blocking; fine from async tests, the server runs elsewhere)

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.root_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def fault(self, fault: str | int, model: str = "*", count: int = 1, retry_after: float = 1,
              after_chunks: int | None = None) -> Any:
        return self._call("POST", "/_mock/faults", {"model": model, "fault": str(fault), "count": count,
                                                    "retry_after": retry_after, "after_chunks": after_chunks})

    def clear_faults(self) -> Any:
        return self._call("DELETE", "/_mock/faults")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_mock/stats")

    def reset(self) -> Any:
        return self._call("POST", "/_mock/reset")

    def update_settings(self, **patch: Any) -> dict[str, Any]:
        return self._call("POST", "/_mock/settings", patch)


def settings_from_args(argv: list[str] | None = None) -> tuple[str, int, MockSettings, str]:
    """Parse ``--host --port --latency-ms --ttft-ms --itl-ms --completion-tokens
    --disagreement --cache-min-tokens --difficulty --settings-json`` (the CLI mirrors these)."""
    import argparse

    from simulator.state import MockSettings

    p = argparse.ArgumentParser("mock-upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--ttft-ms", type=float)
    p.add_argument("--itl-ms", type=float)
    p.add_argument("--completion-tokens", type=int)
    p.add_argument("--disagreement", type=float)
    p.add_argument("--cache-min-tokens", type=int)
    p.add_argument("--difficulty", action="store_true", default=None,
                   help="per-question difficulty model (simulator/difficulty.py)")
    p.add_argument("--settings-json", help="full MockSettings as JSON (flags override it)")
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    base = json.loads(a.settings_json) if a.settings_json else {}
    for k in ("latency_ms", "ttft_ms", "itl_ms", "completion_tokens", "disagreement", "cache_min_tokens", "difficulty"):
        if getattr(a, k) is not None:
            base[k] = getattr(a, k)
    return a.host, a.port, MockSettings(**base), a.log_level


def main(argv: list[str] | None = None) -> None:
    host, port, settings, log_level = settings_from_args(argv)
    serve(host, port, settings, log_level)


if __name__ == "__main__":
    main()
