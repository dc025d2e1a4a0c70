"""The cascade evaluation harness: APGR of the answer check on synthetic cases of every kind."""

from __future__ import annotations

import json

import pytest

from classifier.training.cascade_eval import evaluate, format_report, labels, main, read_rows
from classifier.training.cascade_synth import GENERATORS, synthetic_cases


@pytest.fixture(scope="module")
def report():
    return evaluate(synthetic_cases(1500, seed=7))


def test_synthetic_cases_cover_every_kind_and_are_deterministic():
    a, b = synthetic_cases(50, seed=3), synthetic_cases(50, seed=3)
    assert a == b
    assert {r["kind"] for r in a} == set(GENERATORS)
    assert any("logprobs" in r for r in a) and any("logprobs" not in r for r in a)


def test_check_beats_baselines_on_every_kind(report):
    for group, res in report.items():
        assert res["check"]["apgr"] > res["random"]["apgr"] + 0.05, group
        assert res["check"]["apgr"] > res["naive_letter"]["apgr"], group
        assert res["check"]["apgr"] <= res["oracle"]["apgr"], group
        assert res["check"]["auroc"] > 0.6, group


def test_logprobs_add_signal(report):
    assert report["all"]["check"]["apgr"] > report["all"]["check_no_logprobs"]["apgr"]


def test_check_detects_the_generated_kind():
    for r in synthetic_cases(100, seed=11):
        from classifier.training.cascade_eval import check_kind
        assert check_kind(r) == r["kind"], r


def test_report_formats(report):
    text = format_report(report)
    assert "check" in text and "mcq" in text and "APGR" in text


def test_apgr_of_perfect_and_inverted_orders():
    rows = [{"prompt": "What is 2 + 2?", "answers": [a, "4"], "labels": {"cheap": c, "strong": 1.0}}
            for a, c in [("4", 1.0), ("5", 0.0)] * 20]
    rep = evaluate(rows)
    assert rep["all"]["check"]["apgr"] == pytest.approx(rep["all"]["oracle"]["apgr"])
    assert rep["all"]["check"]["auroc"] == 1.0


def test_labels_required():
    with pytest.raises(ValueError):
        labels({"answers": ["a"]})
    assert labels({"cheap_correct": 1, "strong_correct": 0}) == (1.0, 0.0)


def test_main_reads_labelled_file(tmp_path, capsys):
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in synthetic_cases(60, seed=1)) + "\n")
    assert len(list(read_rows(str(f)))) == 60
    assert main(["--input", str(f)]) == 0
    assert "oracle" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "answers": []}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        list(read_rows(str(bad)))
