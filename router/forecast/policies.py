"""Policies to compare: the current config and variants of it.

A variant is the current config with a few knobs changed. Built-ins:
`current`, `always-fast`, `always-top`. Others come from the command line,
`NAME:key=value,key=value`, or a YAML list of mappings with the same keys:

  force=TIER                       every request on TIER (no classifier)
  reasoning_threshold=X            complexity at or above which reasoning is wanted
  deliberate_threshold=X
  quality.TIER=Q                   a tier's quality (what the target is compared with)
  models.TIER=A+B                  the tier's models (agents, for deliberate)
  effort.TIER=low|medium|high      reasoning effort of a tier
  agents=N                         agents of the deliberate tier
  rounds=N                         rounds of the deliberate tier
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from router.config import ConfigError, TriageConfig
from router.tiers.registry import TIER_NAMES


@dataclass
class PolicyVariant:
    name: str
    force: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    models: dict[str, list[str]] = field(default_factory=dict)
    effort: dict[str, str] = field(default_factory=dict)
    agents: int | None = None
    rounds: int | None = None

    def describe(self) -> str:
        parts = []
        if self.force:
            parts.append(f"force {self.force}")
        parts += [f"{k}={v:g}" for k, v in self.thresholds.items()]
        parts += [f"quality.{k}={v:g}" for k, v in self.quality.items()]
        parts += [f"models.{k}={'+'.join(v)}" for k, v in self.models.items()]
        parts += [f"effort.{k}={v}" for k, v in self.effort.items()]
        if self.agents:
            parts.append(f"agents={self.agents}")
        if self.rounds:
            parts.append(f"rounds={self.rounds}")
        return ", ".join(parts) or "as configured"


def builtin(name: str, config: TriageConfig) -> PolicyVariant | None:
    top = [t for t in TIER_NAMES if t in config.tiers][-1]
    return {"current": PolicyVariant("current"), "always-fast": PolicyVariant("always-fast", force="fast"),
            "always-top": PolicyVariant("always-top", force=top)}.get(name)


def _set(v: PolicyVariant, key: str, value: Any, config: TriageConfig) -> None:
    def tier_of(k: str) -> str:
        t = k.split(".", 1)[1] if "." in k else ""
        if t not in config.tiers:
            raise ConfigError(f"policy {v.name!r}: {key}: tier {t!r} is not configured (have {', '.join(config.tiers)})")
        return t

    try:
        if key == "force":
            if value not in config.tiers:
                raise ConfigError(f"policy {v.name!r}: force: tier {value!r} is not configured")
            v.force = str(value)
        elif key in ("reasoning_threshold", "deliberate_threshold"):
            x = float(value)
            if not 0 <= x <= 1:
                raise ConfigError(f"policy {v.name!r}: {key} must be within [0, 1]")
            v.thresholds[key] = x
        elif key.startswith("quality."):
            v.quality[tier_of(key)] = float(value)
        elif key.startswith("models."):
            names = value if isinstance(value, list) else str(value).split("+")
            unknown = [m for m in names if m not in config.model_names]
            if unknown:
                raise ConfigError(f"policy {v.name!r}: {key}: {', '.join(unknown)} not in model_list")
            v.models[tier_of(key)] = [str(m) for m in names]
        elif key.startswith("effort."):
            if value not in ("low", "medium", "high"):
                raise ConfigError(f"policy {v.name!r}: {key} must be low, medium or high")
            v.effort[tier_of(key)] = str(value)
        elif key in ("agents", "rounds"):
            n = int(value)
            if n < (2 if key == "agents" else 1):
                raise ConfigError(f"policy {v.name!r}: {key} must be >= {2 if key == 'agents' else 1}")
            setattr(v, key, n)
        else:
            raise ConfigError(f"policy {v.name!r}: unknown setting {key!r}")
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"policy {v.name!r}: {key}: bad value {value!r}") from None


def parse(spec: str, config: TriageConfig) -> PolicyVariant:
    """`always-fast`, or `NAME:key=value,key=value`."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not rest:
        b = builtin(name, config)
        if b is None:
            raise ConfigError(f"unknown policy {name!r}: use current, always-fast, always-top or NAME:key=value,...")
        return b
    v = PolicyVariant(name)
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"policy {name!r}: expected key=value, got {item!r}")
        _set(v, key.strip(), value.strip(), config)
    return v


def load_file(path: Path, config: TriageConfig) -> list[PolicyVariant]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    items = raw.get("policies") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a list of policies (or a mapping with `policies:`)")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(parse(item, config))
            continue
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{path}: policies[{i}] needs a name")
        v = PolicyVariant(str(item["name"]))
        for k, val in item.items():
            if k == "name":
                continue
            if isinstance(val, dict):  # quality: {fast: 0.7}
                for t, x in val.items():
                    _set(v, f"{k}.{t}", x, config)
            else:
                _set(v, k, val, config)
        out.append(v)
    return out


def apply(v: PolicyVariant, config: TriageConfig) -> TriageConfig:
    """The config this variant describes (validated like any config)."""
    raw = config.model_dump(exclude={"source", "derived", "ignored", "tiers"}, exclude_none=True)
    tiers = raw["tiers"] = {name: spec.model_dump(exclude_none=True) for name, spec in config.tiers.items()}
    for t, q in v.quality.items():
        tiers[t]["quality"] = q
    for t, ms in v.models.items():
        tiers[t]["models"] = ms
        tiers[t]["fallbacks"] = []
    for t, e in v.effort.items():
        tiers[t]["reasoning_effort"] = e
    if "deliberate" in tiers:
        d = tiers["deliberate"]
        if v.agents:
            base = d["models"]
            d["models"] = [base[i % len(base)] for i in range(v.agents)]
        if v.rounds:
            d["rounds"] = v.rounds
            if v.rounds > 1:
                d["strategy"] = "debate"
    raw["policy"].update(v.thresholds)
    try:
        out = TriageConfig.model_validate({**raw, "source": f"{config.source} [{v.name}]"})
    except Exception as e:  # noqa: BLE001 - a variant's validation error is the user's to read
        raise ConfigError(f"policy {v.name!r}: {e}") from None
    return out
