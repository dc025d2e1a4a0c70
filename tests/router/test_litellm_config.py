"""A LiteLLM proxy config as it is: no `tiers`, LiteLLM's own sections, its master key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
import yaml
from typer.testing import CliRunner

from router.cli import app as cli_app
from router.config import TriageConfig
from simulator.server import MockServer
from simulator.state import MockSettings
from tests.router.conftest import start_proxy

PURE = """
model_list:
  - model_name: cheap
    litellm_params: {model: openai/mock-cheap, api_base: http://127.0.0.1:9/v1, api_key: sk-up}
    model_info: {input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}
  - model_name: cheap-b
    litellm_params: {model: openai/mock-cheap-b, api_base: http://127.0.0.1:9/v1, api_key: sk-up}
    model_info: {input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}
  - model_name: thinker
    litellm_params: {model: openai/mock-reasoner, api_base: http://127.0.0.1:9/v1, api_key: sk-up}
    model_info: {input_cost_per_token: 0.000004, output_cost_per_token: 0.000008, supports_reasoning: true}
  - model_name: strong
    litellm_params: {model: openai/mock-strong, api_base: http://127.0.0.1:9/v1, api_key: sk-up}
    model_info: {input_cost_per_token: 0.00001, output_cost_per_token: 0.00002}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  database_url: postgresql://u:p@db/litellm
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 7
  fallbacks: [{"strong": ["thinker"]}]
litellm_settings:
  drop_params: false
  set_verbose: false
"""


def test_pure_litellm_config_derives_tiers_and_maps_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-litellm-master")
    p = tmp_path / "litellm.yaml"
    p.write_text(PURE)
    caplog.set_level(logging.INFO, logger="triage.config")
    cfg = TriageConfig.load(p)
    assert cfg.tiers["fast"].models == ["cheap", "cheap-b"], "cheapest price level -> fast"
    assert cfg.tiers["reasoning"].models == ["thinker"], "supports_reasoning -> reasoning"
    d = cfg.tiers["deliberate"]
    assert d.models == ["strong"] * 3 and d.aggregator == "strong" and d.strategy == "vote"
    assert cfg.derived and "fast=cheap+cheap-b" in cfg.derived and "deliberate=3xstrong" in cfg.derived
    assert cfg.master_key == "sk-litellm-master"
    assert cfg.num_retries == 2 and cfg.drop_params is False and cfg.fallbacks == {"strong": ["thinker"]}
    assert cfg.chain(["strong"]) == ["strong", "thinker"]
    assert all(m.litellm_params.timeout == 7 for m in cfg.model_list)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one startup warning line names everything ignored"
    msg = warnings[0].getMessage()
    for k in ("general_settings.database_url", "router_settings.routing_strategy", "litellm_settings.set_verbose"):
        assert k in msg
    for k in ("master_key", "num_retries", "fallbacks", "drop_params", "timeout"):
        assert k not in msg, f"{k} is mapped, not ignored"
    assert "sk-litellm-master" not in caplog.text
    wild = TriageConfig.load(_write(tmp_path, PURE.replace('fallbacks: [{"strong": ["thinker"]}]',
                                                            'fallbacks: [{"strong": ["thinker"]}]\n  default_fallbacks: [cheap]')))
    assert wild.chain(["strong"]) == ["strong", "thinker", "cheap"] and wild.chain(["cheap-b"]) == ["cheap-b", "cheap"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "other.yaml"
    p.write_text(text)
    return p


def test_tiers_derived_from_litellm_price_map(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model_list": [
        {"model_name": n, "litellm_params": {"model": f"openai/{n}", "api_key": "sk"}}
        for n in ("gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small")
    ]}))
    cfg = TriageConfig.load(p)
    assert cfg.tiers["fast"].models == ["gpt-4o-mini"], "an embedding model (cheaper) serves no chat tier"
    assert cfg.tiers["reasoning"].models == ["o3-mini"]
    assert cfg.tiers["deliberate"].models == ["gpt-4o"] * 3
    assert cfg.entries("o3-mini")[0].model_info.supports_reasoning, "called as a native reasoning model"


def test_config_show_prints_effective_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-litellm-master")
    p = tmp_path / "litellm.yaml"
    p.write_text(PURE)
    res = CliRunner().invoke(cli_app, ["config", "show", "--config", str(p)])
    assert res.exit_code == 0, res.output
    shown = yaml.safe_load(res.stdout)
    assert shown["tiers"]["fast"]["models"] == ["cheap", "cheap-b"]
    assert shown["derived"].startswith("derived tiers")
    assert shown["num_retries"] == 2 and shown["fallbacks"] == {"strong": ["thinker"]}
    assert "sk-litellm-master" not in res.output and "sk-up" not in res.output


SIM_CONFIG = """
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {base}
      api_key: os.environ/SIM_UPSTREAM_KEY
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {base}
      api_key: os.environ/SIM_UPSTREAM_KEY
  - model_name: o3-mini
    litellm_params:
      model: openai/o3-mini
      api_base: {base}
      api_key: os.environ/SIM_UPSTREAM_KEY
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
router_settings:
  routing_strategy: usage-based-routing-v2
  fallbacks: [{{"gpt-4o": ["gpt-4o-mini"]}}]
  num_retries: 1
litellm_settings:
  drop_params: true
environment_variables:
  SIM_UPSTREAM_KEY: sk-sim-upstream
"""


@pytest.fixture(scope="module")
def litellm_proxy(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[tuple[str, MockServer]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("LITELLM_MASTER_KEY", "sk-1234")
    mp.setenv("REDIS_URL", redis_server.url)
    with MockServer(MockSettings()) as mock:
        path = tmp_path_factory.mktemp("litellm") / "config.yaml"
        path.write_text(SIM_CONFIG.format(base=mock.base_url))
        server, thread, root = start_proxy(path)
        try:
            yield root, mock
        finally:
            server.should_exit = True
            thread.join(15)
            mp.undo()


def test_unmodified_litellm_config_serves_with_litellm_master_key(litellm_proxy: tuple[str, MockServer]) -> None:
    root, mock = litellm_proxy
    client = openai.OpenAI(base_url=root + "/v1", api_key="sk-1234", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"triage/auto", "triage/fast", "triage/reasoning", "triage/deliberate", "gpt-4o"} <= ids
    for model, upstream in (("triage/fast", "gpt-4o-mini"), ("triage/reasoning", "o3-mini"), ("gpt-4o-mini", "gpt-4o-mini")):
        r = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert r.parse().choices[0].message.content.startswith("Answer:")
        assert mock.state.last[-1]["model"] == upstream
        assert mock.state.last[-1]["api_key_sha256"] is not None, "environment_variables feed os.environ/ refs"
    r = client.chat.completions.with_raw_response.create(model="triage/deliberate", messages=[{"role": "user", "content": "hi"}])
    assert r.headers["x-triage-tier"] == "deliberate"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=root + "/v1", api_key="sk-wrong", max_retries=0).models.list()


def test_litellm_fallbacks_are_honoured(litellm_proxy: tuple[str, MockServer]) -> None:
    root, mock = litellm_proxy
    # gpt-4o fails twice (first try + num_retries 1 would retry it); the fallback answers
    httpx.post(mock.root_url + "/_mock/faults", json={"model": "gpt-4o", "fault": "500", "count": 5}).raise_for_status()
    try:
        client = openai.OpenAI(base_url=root + "/v1", api_key="sk-1234", max_retries=0)
        r = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert r.headers["x-triage-model"] == "gpt-4o-mini"
    finally:
        httpx.delete(mock.root_url + "/_mock/faults")


@pytest.mark.parametrize("model", ["triage/reasoning", "triage/deliberate"])
def test_litellm_config_streams_tool_calls(litellm_proxy: tuple[str, MockServer], model: str) -> None:
    from simulator import model as mm

    root, mock = litellm_proxy
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer"}}}}}]
    msgs = [{"role": "user", "content": "look it up"}]
    client = openai.OpenAI(base_url=root + "/v1", api_key="sk-1234", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=msgs, tools=tools, stream=True)
    args, names, finish, answered = "", "", None, ""
    for ch in raw.parse():
        answered = ch.model or answered  # the winning agent's model (an agent may have fallen back)
        for c in ch.choices:
            for tc in c.delta.tool_calls or ():
                names += (tc.function.name or "") if tc.function else ""
                args += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    want = mm.tool_calls_for(answered, msgs, {"tools": tools}, mock.state.settings.disagreement)
    assert names == "lookup" and args == want[0]["function"]["arguments"] and finish == "tool_calls"


@pytest.mark.slow
def test_triage_serve_loads_unmodified_litellm_config(tmp_path: Path, redis_url: str) -> None:
    """The Done-when check as a user runs it: `triage serve --config litellm.yaml`, the LiteLLM master key,
    tool calls streamed through triage/reasoning and triage/deliberate."""
    import os
    import subprocess
    import sys

    from simulator import model as mm
    from tests.helpers import wait_ready
    from tests.router.conftest import free_port

    with MockServer(MockSettings()) as mock:
        path = tmp_path / "litellm.yaml"
        path.write_text(SIM_CONFIG.format(base=mock.base_url))
        port = free_port()
        log = tmp_path / "serve.log"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": "sk-1234",
               "REDIS_URL": redis_url}
        env.pop("TRIAGE_MASTER_KEY", None)
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "router.cli", "serve", "--config", str(path), "--port", str(port)],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_ready(port, proc, why=log.read_text)
                client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-1234", max_retries=0)
                tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
                    "type": "object", "properties": {"q": {"type": "string"}}}}}]
                msgs = [{"role": "user", "content": "find it"}]
                for model in ("triage/reasoning", "triage/deliberate"):
                    args, model_seen = "", ""
                    for ch in client.chat.completions.create(model=model, messages=msgs, tools=tools, stream=True):
                        model_seen = ch.model or model_seen
                        for c in ch.choices:
                            for tc in c.delta.tool_calls or ():
                                args += (tc.function.arguments or "") if tc.function else ""
                    want = mm.tool_calls_for(model_seen, msgs, {"tools": tools}, mock.state.settings.disagreement)
                    assert args == want[0]["function"]["arguments"]
            finally:
                proc.terminate()
                proc.wait(15)
        text = log.read_text()
        assert "derived tiers from model_list prices" in text
        ignored = [ln for ln in text.splitlines() if "LiteLLM settings Triage ignores" in ln]
        assert len(ignored) == 1 and "router_settings.routing_strategy" in ignored[0]
        assert "sk-1234" not in text
