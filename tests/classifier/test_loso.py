from __future__ import annotations

import json
import math

import numpy as np

from classifier.training.data import family, load
from classifier.training.fit import Feats, fit, recipe
from classifier.training.fixture import write_fixture
from classifier.training.loso import Fold, folds, main, recipe_scorer, run, score_fold


def _files(tmp_path):
    a = write_fixture(tmp_path / "routing_a.jsonl", n=200, seed=1, source="fixa")
    b = write_fixture(tmp_path / "routing_b.jsonl", n=200, seed=2, source="fixb")
    return [a, b]


def test_family_merges_the_same_task_across_files():
    assert family("routellm/mmlu/abstract_algebra") == family("llmrouter/mmlu") == "mmlu"
    assert family("gsm8k") == family("llmrouter/gsm8k") == family("llmrouter/agentverse-mgsm") == "gsm8k"
    assert family("hendrycks_math/geometry") == family("llmrouter/math") == "math"
    assert family("bbh/navigate") == "bbh"
    assert family("llmrouter/natural_qa") == "natural_qa"


def test_every_held_out_row_is_scored_by_a_model_that_never_saw_its_file_or_family(tmp_path):
    ex, _ = load(_files(tmp_path))
    seen: list[tuple[str, set[str], set[str]]] = []

    def spy(train, held):
        seen.append(({e.file for e in held} and next(iter({e.file for e in held})), {e.file for e in train},
                     {family(e.source) for e in train}))
        return np.zeros(len(held))

    for fold in folds(ex):
        score_fold(fold, ex, spy)
    assert {s[0] for s in seen} == {"routing_a.jsonl", "routing_b.jsonl"}
    for held_file, train_files, train_fams in seen:
        assert held_file not in train_files
        assert train_fams and not train_fams & {"fixa" if held_file == "routing_a.jsonl" else "fixb"}


def test_family_exclusion_drops_shared_task_rows(tmp_path):
    a = tmp_path / "routing_a.jsonl"
    b = tmp_path / "proxy_b.jsonl"
    rows_a = [{"prompt": f"q{i} what is {i}?", "source": "llmrouter/gsm8k" if i % 2 else "llmrouter/nq",
               "scores": {"small": float(i % 3 == 0), "large": 1.0}} for i in range(60)]
    rows_b = [{"prompt": f"word problem {i}", "source": "gsm8k", "n_solution_lines": 2 + i % 5} for i in range(60)]
    a.write_text("\n".join(json.dumps(r) for r in rows_a))
    b.write_text("\n".join(json.dumps(r) for r in rows_b))
    ex, _ = load([a, b])
    fold = next(f for f in folds(ex) if f.file == "routing_a.jsonl")
    calls = []

    def spy(train, held):
        calls.append(({family(e.source) for e in held}, {e.file for e in train}))
        return np.zeros(len(held))

    s = score_fold(fold, ex, spy)
    by_family = {next(iter(h)): t for h, t in calls}
    assert by_family == {"nq": {"proxy_b.jsonl"}}   # other tasks still train on the proxy file
    # the only other file is the same task, so GSM8K rows have nothing to learn from: constant score
    gsm = np.array([family(e.source) == "gsm8k" for e in fold.held])
    assert (s[gsm] == 0.5).all() and (s[~gsm] == 0.0).all()


def test_proxy_files_are_scored_by_auroc(tmp_path):
    f = tmp_path / "difficulty_math.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"problem {i} " + "x" * i, "source": "hendrycks_math/algebra",
                                       "level": 1 + i % 5}) for i in range(50)))
    ex, _ = load([f])
    (fold,) = folds(ex)
    assert isinstance(fold, Fold) and fold.kind.startswith("AUROC level")
    assert set(fold.target) == {0.0, 1.0}


def test_loso_run_and_cli(tmp_path, capsys):
    files = _files(tmp_path)
    ex, _ = load(files)
    feats = Feats.build(ex)
    res = run(ex, recipe_scorer(recipe(), feats))
    for m in res["folds"].values():
        assert 0.0 <= m["auroc"] <= 1.0 and not math.isnan(m["apgr"])
    assert {"loso_mean", "apgr_mean", "auroc_gold_mean"} <= set(res["summary"])
    out = tmp_path / "loso.json"
    main(["--data", *map(str, files), "--set", "C=0.5", "--json", str(out)])
    rep = json.loads(out.read_text())
    assert len(rep) == 1 and "summary" in next(iter(rep.values()))
    assert "LOSO mean" in capsys.readouterr().out


def test_length_prior_is_added_to_the_fitted_length_weight(tmp_path):
    ex, _ = load(_files(tmp_path))
    feats = Feats.build(ex)
    base = fit(ex, feats, recipe(dense=("long_prompt",), length_w=0.0))
    lifted = fit(ex, feats, recipe(dense=("long_prompt",), length_w=0.5))
    assert abs(lifted.coef[-1] - base.coef[-1] - 0.5) < 1e-9
