from __future__ import annotations

import json

import numpy as np
import pytest

from classifier import Classifier
from classifier.training.data import ledger_label, load, normalise, split_of
from classifier.training.evaluate import evaluate, format_report
from classifier.training.metrics import apgr, auroc, cost_saved_at, ece
from classifier.training.train import train


def test_metrics_known_values():
    weak = np.array([1, 1, 0, 0, 1, 0], float)
    strong = np.ones(6)
    perfect = 1 - weak                       # exactly the prompts the weak model fails
    assert auroc(perfect, 1 - weak) == 1.0
    assert auroc(-perfect, 1 - weak) == 0.0
    assert auroc(np.zeros(6), 1 - weak) == 0.5   # all ties = random
    assert apgr(perfect, weak, strong) > 0.7
    assert apgr(np.zeros(6), weak, strong) == pytest.approx(0.5)
    saved, share = cost_saved_at(perfect, weak, strong, 1.0, 10.0, frac=1.0)
    assert share == pytest.approx(0.5) and saved == pytest.approx(1 - (0.5 * 10 + 0.5) / 10)
    assert ece(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0


def test_split_is_deterministic_and_dedups_by_normalised_prompt(tmp_path):
    assert normalise("  What IS 2+2?? ") == normalise("what is 2 2")
    assert split_of(normalise("Hello, World")) == split_of(normalise("hello world!"))
    f = tmp_path / "dup.jsonl"
    rows = [{"prompt": "What is 2+2?", "label": 0}, {"prompt": "what is 2 + 2", "label": 1},
            {"prompt": "Prove Fermat", "label": 1}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    ex, _ = load([f])
    assert [e.y for e in ex] == [0.0, 1.0]


def test_ledger_labelling_rules():
    base = {"request_id": "r", "tenant": "t", "model": "m", "complexity": 0.1, "cost_usd": 0.001}
    assert ledger_label({**base, "tier": "fast", "prompt": "x", "quality": 0.2}) == (1.0, 1.0)
    assert ledger_label({**base, "tier": "fast", "prompt": "x", "quality": 0.9}) == (0.0, 1.0)
    assert ledger_label({**base, "tier": "reasoning", "prompt": "x", "quality": 0.1}) == (1.0, 0.5)
    assert ledger_label({**base, "tier": "deliberate", "prompt": "x", "quality": 0.9}) is None
    assert ledger_label({**base, "tier": "fast", "prompt": None, "quality": 0.2}) is None
    assert ledger_label({**base, "tier": "fast", "prompt": "x", "quality": None}) is None


def test_train_eval_round_trip(trained, fixture_file, tmp_path):
    out, summary = trained
    assert summary["n_fit"] > 100
    clf = Classifier.load(out)
    easy = clf.score("thanks, that was helpful!")
    hard = clf.score("Prove that the sum of the first n odd numbers is a perfect square, step by step.")
    assert hard > easy
    report = evaluate(out, [fixture_file], plot=tmp_path / "curves.png", baselines=False)
    res = report["files"]["routing_fixture.jsonl"]
    assert set(res["scorers"]) == {"triage", "random", "length"}
    m = res["scorers"]["triage"]
    assert m["auroc"] > 0.8 and m["apgr"] > res["scorers"]["random"]["apgr"]
    assert 0 <= m["ece"] <= 1
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert "APGR" in format_report(report)


def test_train_accepts_ledger_export(fixture_file, tmp_path):
    ledger = tmp_path / "ledger_export.jsonl"
    rows = []
    for i in range(60):
        hard = i % 2 == 0
        rows.append({"request_id": f"req-{i}", "tenant": "acme", "tier": "fast", "model": "small",
                     "complexity": 0.2, "cost_usd": 0.0001,
                     "prompt": (f"Derive a closed form for the recurrence a_n = 3a_(n-1) + {i}" if hard
                                else f"what's the weather in city {i}"),
                     "quality": 0.1 if hard else 0.9})
    rows.append({"request_id": "x", "tenant": "acme", "tier": "fast", "model": "small", "complexity": 0.1,
                 "cost_usd": 0.0, "prompt": None, "quality": 0.1})           # not opted in: skipped
    rows.append({"request_id": "y", "tenant": "acme", "tier": "fast", "model": "small", "complexity": 0.1,
                 "cost_usd": 0.0, "prompt": "no feedback", "quality": None})  # no feedback: skipped
    ledger.write_text("\n".join(json.dumps(r) for r in rows))
    ex, _ = load([ledger])
    assert len(ex) == 60 and all(e.source.startswith("ledger/") for e in ex)
    only_fixture = train([fixture_file], tmp_path / "a.json")
    with_ledger = train([fixture_file, ledger], tmp_path / "b.json")
    assert with_ledger["n_fit"] + with_ledger["n_cal"] > only_fixture["n_fit"] + only_fixture["n_cal"]
    clf = Classifier.load(tmp_path / "b.json")
    assert clf.score("Derive a closed form for the recurrence a_n = 3a_(n-1) + 5") > \
        clf.score("what's the weather in city 5")


def test_training_is_deterministic(fixture_file, tmp_path):
    train([fixture_file], tmp_path / "1.json")
    train([fixture_file], tmp_path / "2.json")
    assert (tmp_path / "1.json").read_bytes() == (tmp_path / "2.json").read_bytes()


def test_pure_scorer_matches_sklearn_math(trained):
    """The exported tables must reproduce the trained linear model, not approximately-ish."""
    from classifier.features import featurize
    out, _ = trained
    art = json.loads(out.read_text())
    clf = Classifier.load(out)
    vocab = {t: i for i, t in enumerate(art["vocab"])}
    idf, coef = np.array(art["idf"]), np.array(art["coef"])
    for text in ["Is 7 a divisor of 2^(3n) - 1 for all n?", "hi there", "set a timer for 5 minutes"]:
        toks, dense = featurize(text)
        v = np.zeros(len(vocab))
        for t in toks:
            if t in vocab:
                v[vocab[t]] += 1
        v = np.where(v > 0, 1 + np.log(np.maximum(v, 1)), 0) * idf
        if np.linalg.norm(v) > 0:
            v /= np.linalg.norm(v)
        z = v @ coef + art["intercept"]
        if "dense" in art:
            from classifier.features import DENSE_NAMES
            d = art["dense"]
            x = np.array([dense[DENSE_NAMES.index(n)] for n in d["names"]])
            z += np.dot(d["coef"], (x - d["mean"]) / np.array(d["std"]))
        a, b = art["calibration"]["platt"]
        assert clf.score(text) == pytest.approx(1 / (1 + np.exp(-(a * z + b))), abs=1e-9)


def test_calibration_in_the_large_on_fixture(trained, tmp_path):
    """Mean predicted complexity tracks the observed cheap-model failure rate, per group."""
    from classifier.training.fixture import write_fixture
    out, _ = trained
    clf = Classifier.load(out)
    fresh, _ = load([write_fixture(tmp_path / "fresh.jsonl", n=400, seed=99)])
    for group in ("fixture/easy", "fixture/hard"):
        rows = [e for e in fresh if e.source == group]
        p = np.array([clf.score(e.request) for e in rows])
        fail = np.array([1 - e.outcome[0] for e in rows])
        assert abs(p.mean() - fail.mean()) < 0.15, (group, p.mean(), fail.mean())
