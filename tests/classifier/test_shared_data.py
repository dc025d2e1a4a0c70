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


def test_train_on_shared_data_reproduces_the_shipped_artifact(shared_data, tmp_path):
    """`triage train --data ../shared/data` gives the shipped weights (a tolerance for BLAS/
    platform rounding; on the machine that trained it the bytes are identical)."""
    import numpy as np
    import orjson

    from classifier.model import DEFAULT_ARTIFACT
    from classifier.training.train import train

    shipped = orjson.loads(DEFAULT_ARTIFACT.read_bytes())
    out = tmp_path / "retrained.json"
    train([shared_data], out, opts=_recipe_of(shipped))
    new = orjson.loads(out.read_bytes())
    assert new["vocab"] == shipped["vocab"]
    assert np.allclose(new["idf"], shipped["idf"], atol=1e-6)
    assert np.allclose(new["coef"], shipped["coef"], atol=1e-3)
    assert abs(new["intercept"] - shipped["intercept"]) < 1e-3
    for a, b in zip(new["tiers"], shipped["tiers"]):
        assert a["name"] == b["name"] and abs(a["min"] - b["min"]) <= 0.011
    if "dense" in shipped:
        assert new["dense"]["names"] == shipped["dense"]["names"]
        assert np.allclose(new["dense"]["coef"], shipped["dense"]["coef"], atol=1e-3)


def _recipe_of(art):
    # The shipped artifact must have been trained with the code's default recipe; this keeps
    # the test honest if someone ships a one-off --set artifact.
    from classifier.training.fit import RECIPE
    rec = {k: (tuple(v) if isinstance(v, list) else v) for k, v in art["meta"]["recipe"].items()}
    assert rec == RECIPE, "shipped artifact was not trained with fit.RECIPE"
    return {}
