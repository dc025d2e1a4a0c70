"""deploy/helm/triage: renders with `helm template` when helm is on PATH; otherwise its structure is checked.

The structural check is what a broken chart usually gets wrong: a template that reads a value the
values file does not define (rendered as empty, silently), or a missing piece the issue asks for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "triage"
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())}


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "triage"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"]


def test_every_template_value_exists():
    values = _values()
    missing = []
    for name, text in _templates().items():
        for ref in VALUES_REF.findall(text):
            node: Any = values
            for part in ref.strip(".").split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{name}: .Values{ref}")
                    break
                node = node[part]
    assert not missing, missing


def test_chart_has_what_a_deployment_needs():
    t = _templates()
    kinds = {m for text in t.values() for m in re.findall(r"^kind:\s*(\w+)", text, re.M)}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ServiceMonitor"} <= kinds
    v = _values()
    assert v["probes"]["liveness"]["path"] == "/healthz"
    assert v["probes"]["readiness"]["path"] == "/readyz"
    dep = t["deployment.yaml"]
    assert "livenessProbe" in dep and "readinessProbe" in dep and "resources:" in dep
    assert "secretKeyRef" in dep and "REDIS_URL" in dep  # Redis from a Secret, never from the ConfigMap
    assert "redis_url" not in yaml.safe_dump(v["config"])
    assert "name: cpu" in t["hpa.yaml"] and "autoscaling/v2" in t["hpa.yaml"]
    assert "policy/v1" in t["pdb.yaml"]
    # the ServiceMonitor is a toggle (it needs the Prometheus Operator's CRD)
    assert t["servicemonitor.yaml"].lstrip().startswith("{{- if .Values.serviceMonitor.enabled }}")
    assert v["serviceMonitor"]["enabled"] is False and v["serviceMonitor"]["path"] == "/metrics"


def test_values_config_is_a_valid_triage_config(monkeypatch):
    from router.config import TriageConfig

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = TriageConfig.from_mapping(_values()["config"], "values.yaml:config")
    assert "fast" in cfg.tiers


def test_template_delimiters_balance():
    for name, text in _templates().items():
        assert text.count("{{") == text.count("}}"), name
        opens = len(re.findall(r"\{\{-?\s*(?:if|range|with|define)\b", text))
        ends = len(re.findall(r"\{\{-?\s*end\b", text))
        assert opens == ends, f"{name}: {opens} blocks opened, {ends} closed"


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm not installed; structure checked above")
@pytest.mark.parametrize("monitor", [False, True])
def test_helm_template_renders(monitor):
    cmd = ["helm", "template", "t", str(CHART), "--set", "redis.url=redis://redis:6379/0",
           "--set", f"serviceMonitor.enabled={str(monitor).lower()}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert ("ServiceMonitor" in kinds) is monitor
    dep = next(d for d in docs if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert yaml.safe_load(cm["data"]["triage.yaml"])["tiers"]
