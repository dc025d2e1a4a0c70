"""deploy/docker-compose.yml runs as written: its config points only at services the file defines."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _mounted_config() -> Path:
    vol = next(v for v in _compose()["services"]["triage"]["volumes"] if v.endswith(":/etc/triage/triage.yaml:ro"))
    host = vol.split(":/etc/triage")[0]
    default = re.fullmatch(r"\$\{[A-Z_]+:-(.+)\}", host)
    return DEPLOY / (default.group(1) if default else host)


def test_compose_config_targets_only_its_own_services(monkeypatch):
    from router.config import TriageConfig

    services = set(_compose()["services"])
    path = _mounted_config()
    env = _compose()["services"]["triage"]["environment"]
    for k, v in env.items():  # literal values as compose sets them; ${...} ones stand in for the user's
        monkeypatch.setenv(k, "x" if "${" in v else v)
    cfg = TriageConfig.load(path)
    for m in cfg.model_list:
        base = m.litellm_params.api_base
        assert base, f"{m.model_name}: no api_base means a public provider, which needs a key compose may not have"
        assert urlparse(base).hostname in services, f"{m.model_name} -> {base}"
        assert m.model_info.input_cost_per_token is not None  # custom models must be priced or they are refused
    assert "redis" in services and env["REDIS_URL"].startswith("redis://redis:")


def test_simulated_upstream_service_runs_the_real_command():
    from typer.main import get_command

    from router.cli import app

    up = _compose()["services"]["upstream"]
    argv = up["entrypoint"]
    assert argv[:2] == ["triage", "mock-upstream"]
    assert "mock-upstream" in get_command(app).commands
    port = argv[argv.index("--port") + 1]
    cfg = yaml.safe_load(_mounted_config().read_text())
    assert all(f"upstream:{port}" in m["litellm_params"]["api_base"] for m in cfg["model_list"])


def test_example_config_names_no_missing_service(monkeypatch):
    """The real-provider example may use public APIs, but no in-compose host that is not defined."""
    text = (DEPLOY / "triage.example.yaml").read_text()
    live = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    services = set(_compose()["services"])
    for host in re.findall(r"api_base:\s*https?://([A-Za-z0-9_.-]+)", live):
        assert host in services or "." in host, host


def test_image_contains_every_package_the_wheel_ships():
    """The compose services run `triage serve` and `triage mock-upstream` from this image."""
    import tomllib

    root = DEPLOY.parent
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    docker = (DEPLOY / "Dockerfile").read_text()
    for pkg in include:
        name = pkg.rstrip("*")
        assert re.search(rf"^COPY {name} \./{name}$", docker, re.M), f"Dockerfile does not copy {name}/"
