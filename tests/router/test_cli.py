"""`triage serve` on embedded defaults: starts its private Redis and simulated upstream, and stops them on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai

from tests.helpers import wait_ready
from tests.router.conftest import free_port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_embedded_defaults_and_sigterm_cleans_up(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TRIAGE_MASTER_KEY", "TRIAGE_CONFIG")}
    proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--port", str(port), "--state-dir", str(state)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, proc, why=lambda: proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "")
        redis_port = int((state / "redis.url").read_text().rsplit(":", 1)[1].split("/")[0])
        key = (state / "master.key").read_text().strip()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        r = client.chat.completions.create(model="triage/auto", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content and r.usage.completion_tokens <= 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not _port_open(redis_port), "embedded Redis must stop with the proxy"
        assert not (state / "redis.url").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
