"""The `proxy` fixture: real Redis + simulated upstream + the real app over real HTTP.

Tests then talk to it exactly as users do, with the official openai SDK.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest
import uvicorn
import yaml

from simulator.server import MockServer
from simulator.state import MockSettings

MASTER = "sk-test-master-0123456789"

PRICES = {
    # $/token, chosen so costs are easy to assert: small is 10x cheaper than big.
    "small": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "cache_read_input_token_cost": 0.5e-6},
    "small-b": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "cache_read_input_token_cost": 0.5e-6},
    "big": {"input_cost_per_token": 10e-6, "output_cost_per_token": 20e-6, "cache_read_input_token_cost": 5e-6},
    "reasoner": {"input_cost_per_token": 4e-6, "output_cost_per_token": 8e-6, "cache_read_input_token_cost": 2e-6,
                 "supports_reasoning": True},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(mock_base: str, redis_url: str, **overrides: Any) -> dict[str, Any]:
    model_list = [
        {"model_name": name, "litellm_params": {"model": f"openai/mock-{name}", "api_base": mock_base, "api_key": "sk-upstream", "timeout": 5},
         "model_info": info}
        for name, info in PRICES.items()
    ]
    cfg: dict[str, Any] = {
        "model_list": model_list,
        "tiers": {
            "fast": {"models": ["small", "small-b"]},
            "reasoning": {"models": ["reasoner"], "reasoning_effort": "medium"},
            "deliberate": {"models": ["big", "big", "big"], "strategy": "vote", "aggregator": "big"},
        },
        "redis_url": redis_url,
        "master_key": MASTER,
        "server": {"max_body_bytes": 256 * 1024},
    }
    cfg.update(overrides)
    return cfg


@dataclass
class Proxy:
    root_url: str
    master_key: str
    config_path: Path
    mock: MockServer
    redis_url: str
    server: Any

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    @property
    def state(self) -> Any:
        return self.server.config.app.app.state.triage

    def client(self, api_key: str | None = None, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key or self.master_key, max_retries=0, **kw)

    def async_client(self, api_key: str | None = None, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key or self.master_key, max_retries=0, **kw)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.root_url, timeout=10)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        with self.http() as c:
            return c.request(method, path, headers={"authorization": f"Bearer {self.master_key}"}, **kw)

    def create_key(self, tenant: str, **policy: Any) -> str:
        r = self.admin("POST", "/admin/keys", json={"tenant": tenant, **policy})
        assert r.status_code in (200, 201), r.text
        return r.json()["key"]

    def rewrite_config(self, mapping: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(mapping))

    def reload(self) -> httpx.Response:
        return self.admin("POST", "/admin/reload")


def start_proxy(config_path: Path, **_: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    from router.http.app import build_app

    port = free_port()
    app = build_app(config_path=str(config_path))
    # the HTTP protocol `triage serve` runs (shaped parse errors, a response's head and body in one write)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           access_log=False, timeout_graceful_shutdown=5,
                                           http="router.http.protocol:ShapedHttpToolsProtocol"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("proxy failed to start")
        time.sleep(0.02)
    return server, t, f"http://127.0.0.1:{port}"


@pytest.fixture()
def mock_upstream() -> Iterator[MockServer]:
    with MockServer(MockSettings()) as m:
        yield m


@pytest.fixture()
def proxy(tmp_path: Path, redis_url: str, mock_upstream: MockServer) -> Iterator[Proxy]:
    cfg = make_config(mock_upstream.base_url, redis_url)
    path = tmp_path / "triage.yaml"
    path.write_text(yaml.safe_dump(cfg))
    server, thread, root = start_proxy(path)
    try:
        yield Proxy(root_url=root, master_key=MASTER, config_path=path, mock=mock_upstream, redis_url=redis_url, server=server)
    finally:
        server.should_exit = True
        thread.join(15)
