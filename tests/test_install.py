"""The README's start command, run verbatim in a fresh virtualenv on a copy of the repo.

A dependency missing from pyproject.toml fails here, not on a new user's machine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import openai
import pytest

from tests.helpers import wait_ready

ROOT = Path(__file__).resolve().parents[1]


def readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```(?:bash|sh)?\n(.+?)\n```", text, re.S)
    assert m, f"README has no '{marker}' block"
    cmd = m.group(1).strip()
    assert "\n" not in cmd, "the README promises exactly one command"
    return cmd


def test_readme_test_command_is_what_ci_runs() -> None:
    assert readme_command("test-command") in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_fresh_venv_start_command_serves_first_request(tmp_path: Path) -> None:
    cmd = readme_command("start-command")
    work = tmp_path / "triage"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", "venv", ".git", ".triage", "__pycache__", "*.egg-info", "bench"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "REDIS_URL", "TRIAGE_"))}
    env.update(TRIAGE_PORT=str(port), TRIAGE_STATE_DIR=str(state), PATH=os.environ["PATH"],
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_ready(port, proc, timeout=600, why=lambda: (tmp_path / "serve.log").read_text()[-4000:])
        key = (state / "master.key").read_text().strip()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        msg = [{"role": "user", "content": "Say hello."}]
        resp = client.chat.completions.create(model="triage/auto", messages=msg)
        assert resp.choices[0].message.content
        parts = [c.choices[0].delta.content for c in client.chat.completions.create(model="triage/auto", messages=msg, stream=True)
                 if c.choices and c.choices[0].delta.content]
        assert parts
        assert (state / "redis.url").exists()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # the private Redis went down with the proxy, and its AOF stayed on disk
    assert not (state / "redis.url").exists()
    assert list((state / "redis").glob("appendonly*")), "embedded Redis must persist with AOF"
