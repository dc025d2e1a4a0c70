"""Tests on ../shared/data; they skip with a reason where it is absent."""

from __future__ import annotations

import pytest

from classifier.training.data import load, load_file
from classifier.training.evaluate import evaluate

pytestmark = pytest.mark.data


def test_routing_specs_and_labels(shared_data):
    ex, spec = load_file(shared_data / "routing_gpt4_vs_mixtral.jsonl")
    assert spec is not None and "gpt-4" in spec.eval_strong and "Mixtral" in spec.eval_cheap
    assert spec.price_strong > spec.price_cheap
    assert all(e.gold and e.outcome is not None and 0 <= e.y <= 1 for e in ex)
    _, spec9 = load_file(shared_data / "routing_llmrouter_9models.jsonl")
    assert spec9 is not None and "chatqa" not in spec9.eval_cheap   # broken-format models dropped


def test_splits_agree_across_files_for_duplicate_prompts(shared_data):
    ex, _ = load([shared_data / "difficulty_gsm8k.jsonl", shared_data / "routing_llmrouter_9models.jsonl"])
    seen: dict[str, str] = {}
    for e in ex:
        assert seen.setdefault(e.key, e.split) == e.split


def test_shipped_model_beats_baselines_on_held_out_gpt4_mixtral(shared_data):
    report = evaluate(None, [shared_data / "routing_gpt4_vs_mixtral.jsonl"], baselines=True)
    res = report["files"]["routing_gpt4_vs_mixtral.jsonl"]["scorers"]
    assert res["triage"]["auroc"] > res["length"]["auroc"]
    assert res["triage"]["apgr"] > res["random"]["apgr"]
    assert res["triage"]["apgr"] > res["tfidf_lr"]["apgr"]
    if "litellm" in res:
        assert res["triage"]["apgr"] > res["litellm"]["apgr"]
    assert res["triage"]["ece"] < 0.1
