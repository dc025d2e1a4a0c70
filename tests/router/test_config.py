"""Config loading: LiteLLM's model_list verbatim, the tiers section, and errors that point at the fix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from router.config import ConfigError, TriageConfig
from router.runtime import Snapshot

LITELLM_STYLE = """
model_list:
  - model_name: small
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: os.environ/TEST_OPENAI_KEY
  - model_name: big
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:9/v1
      api_key: os.environ/TEST_OPENAI_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: sk-ant
  - model_name: custom
    litellm_params:
      model: hosted_vllm/my-org/my-model
      api_base: http://127.0.0.1:8001/v1
    model_info:
      input_cost_per_token: 0.0000002
      output_cost_per_token: 0.0000004
general_settings:
  master_key: sk-1234
router_settings:
  routing_strategy: simple-shuffle
litellm_settings:
  drop_params: true
tiers: {fast: {models: [small]}, reasoning: {models: [big], reasoning_effort: medium}, deliberate: {models: [big, big, big], strategy: vote}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_litellm_config_verbatim_with_minimal_tiers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-from-env")
    caplog.set_level(logging.WARNING)
    cfg = TriageConfig.load(write(tmp_path, LITELLM_STYLE))
    assert cfg.model_names == ["small", "big", "claude", "custom"]
    assert cfg.entries("small")[0].litellm_params.api_key == "sk-from-env"
    assert cfg.tiers["deliberate"].models == ["big", "big", "big"] and cfg.tiers["deliberate"].strategy == "vote"
    assert cfg.tiers["reasoning"].reasoning_effort == "medium"
    assert cfg.master_key == "sk-1234" and cfg.drop_params is True, "mapped LiteLLM settings"
    assert "router_settings.routing_strategy" in caplog.text, "unmapped LiteLLM settings are named in a warning"
    snap = Snapshot.build(cfg)
    small, claude, custom = snap.deployments["small"][0], snap.deployments["claude"][0], snap.deployments["custom"][0]
    assert (small.provider, small.model, small.url) == ("openai", "gpt-4o-mini", "https://api.openai.com/v1/chat/completions")
    assert (claude.provider, claude.model) == ("litellm", "anthropic/claude-sonnet-4-5")
    assert (custom.provider, custom.model) == ("openai", "my-org/my-model")
    assert snap.prices.price("small").input > 0, "priced from litellm's bundled map"
    assert snap.prices.price("custom").input == pytest.approx(2e-7), "model_info overrides"
    assert "sk-from-env" not in repr(cfg) and "sk-from-env" not in repr(small)


def test_errors_name_file_path_and_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    bad_env = LITELLM_STYLE.replace("os.environ/TEST_OPENAI_KEY", "os.environ/NOPE_KEY")
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, bad_env))
    assert "cfg.yaml" in str(ei.value) and "NOPE_KEY" in str(ei.value)

    monkeypatch.setenv("TEST_OPENAI_KEY", "x")
    raw = yaml.safe_load(LITELLM_STYLE)
    raw["tiers"]["fast"]["models"] = ["smal"]
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    msg = str(ei.value)
    assert "cfg.yaml" in msg and "tiers" in msg and "'smal'" in msg

    raw = yaml.safe_load(LITELLM_STYLE)
    raw["tiers"]["reasoning"]["reasoning_effort"] = "extreme"
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    assert "tiers.reasoning.reasoning_effort" in str(ei.value)

    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, "model_list: [\n"))
    assert "invalid YAML" in str(ei.value)

    raw = yaml.safe_load(LITELLM_STYLE)
    del raw["tiers"]["fast"]
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    assert "fast" in str(ei.value)


@pytest.mark.parametrize("tier,knob,value", [
    ("fast", "strategy", "debate"), ("fast", "rounds", 2), ("fast", "reasoning_effort", "high"),
    ("reasoning", "aggregator", "big"), ("reasoning", "strategy", "vote"),
])
def test_each_tier_rejects_knobs_it_does_not_have(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tier: str,
                                                  knob: str, value: object) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "x")
    raw = yaml.safe_load(LITELLM_STYLE)
    raw["tiers"][tier][knob] = value
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    assert f"tiers.{tier}.{knob}: Extra inputs are not permitted" in str(ei.value)


def test_unknown_tier_and_unknown_aggregator_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "x")
    raw = yaml.safe_load(LITELLM_STYLE)
    raw["tiers"]["turbo"] = {"models": ["small"]}
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    assert "tiers.turbo: Extra inputs are not permitted" in str(ei.value)
    raw = yaml.safe_load(LITELLM_STYLE)
    raw["tiers"]["deliberate"]["aggregator"] = "nope"
    with pytest.raises(ConfigError) as ei:
        TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    assert "tiers.deliberate.aggregator: 'nope'" in str(ei.value)


def test_tier_names_and_virtual_models_come_from_the_registry() -> None:
    from router.config import TIERS, VIRTUAL_MODELS
    from router.tiers.registry import EXECUTORS, LEVELS
    from router.tiers.registry import TIERS as REGISTERED

    assert TIERS == tuple(t.name for t in REGISTERED)
    assert VIRTUAL_MODELS == {"triage/auto": None, **{f"triage/{t}": t for t in TIERS}}
    assert LEVELS == ("fast", "reasoning", "deliberate")  # the classifier's verdicts, in order
    assert set(EXECUTORS) == {*TIERS, "passthrough"}


def test_unpriced_model_refused_unless_settled_at_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "x")
    raw = yaml.safe_load(LITELLM_STYLE)
    del raw["model_list"][3]["model_info"]
    cfg = TriageConfig.load(write(tmp_path, yaml.safe_dump(raw)))
    with pytest.raises(ValueError) as ei:
        Snapshot.build(cfg)
    assert "custom" in str(ei.value)
    raw["accounting"] = {"settle_unpriced_at_estimate": True}
    Snapshot.build(TriageConfig.load(write(tmp_path, yaml.safe_dump(raw))))


def test_embedded_defaults_load() -> None:
    cfg = TriageConfig.load(None, defaults_upstream="http://127.0.0.1:1/v1")
    snap = Snapshot.build(cfg)
    assert set(cfg.tiers) == {"fast", "cascade", "reasoning", "deliberate"}
    assert snap.policy_tables.tiers["cascade"].esc.name == "reasoning"  # triage/cascade works out of the box
    assert snap.top_tier == "deliberate"


def test_shipped_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-y")
    path = Path(__file__).resolve().parents[2] / "deploy" / "triage.example.yaml"
    snap = Snapshot.build(TriageConfig.load(path))
    assert snap.deployments["claude"][0].provider == "litellm"
    assert snap.deployments["small"][0].provider == "openai"


def test_redis_topology_lists_become_one_url(tmp_path):
    from router.config import ConfigError, TriageConfig

    base = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://x/v1"},
                            "model_info": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6}}],
            "tiers": {"fast": {"models": ["m"]}}}
    c = TriageConfig.from_mapping({**base, "redis_sentinels": ["s1:26379", "s2:26379"],
                                   "redis_sentinel_service": "mymaster"}, "t")
    assert c.redis_url == "redis+sentinel://s1:26379,s2:26379/mymaster/0"
    c = TriageConfig.from_mapping({**base, "redis_cluster_nodes": ["a:7000", "b:7001"]}, "t")
    assert c.redis_url == "redis+cluster://a:7000,b:7001"
    with pytest.raises(ConfigError, match="redis_sentinel_service"):
        TriageConfig.from_mapping({**base, "redis_sentinels": ["s1:26379"]}, "t")
    with pytest.raises(ConfigError, match="unsupported Redis URL scheme"):
        TriageConfig.from_mapping({**base, "redis_url": "http://nope"}, "t")
