"""`classifier propose` logic on files alone: a tenant's rated rows, its held-out split, the
figures that decide a promote, and LOSO with and without the tenant's rows."""

from __future__ import annotations

from classifier import Classifier
from classifier.training.fixture import write_fixture
from classifier.training.propose import propose, split, tenant_examples, worse


def _rows(n: int = 90) -> list[dict]:
    rows = []
    for i in range(n):
        hard = i % 2 == 0
        rows.append({"request_id": f"r{i}", "tenant": "acme", "tier": "fast",
                     # this tenant's hard asks look like small talk and its easy ones like maths, so the
                     # public model ranks them backwards until it sees the tenant's ratings
                     "prompt": (f"hi zorblax {i}" if hard else
                                f"Solve for x step by step: {i}x^2 + 3x - 7 = 0, then prove the roots are real"),
                     "quality": 0.1 if hard else 0.9})
    rows.append({"request_id": "x", "tenant": "other", "tier": "fast", "prompt": "zorblax 1?", "quality": 0.1})
    rows.append({"request_id": "y", "tenant": "acme", "tier": "fast", "prompt": None, "quality": 0.1})
    return rows


def test_tenant_rows_split_by_prompt_hash_and_weigh_one():
    ex = tenant_examples(_rows(), "acme")
    assert len(ex) == 90 and all(e.weight == 1.0 for e in ex)
    train, held = split(ex)
    assert 15 <= len(held) <= 45 and len(train) + len(held) == 90
    assert split(tenant_examples(_rows(), "acme"))[1] == held     # stable across calls


def test_propose_learns_the_tenant_and_reports_loso(tmp_path):
    public = [write_fixture(tmp_path / "routing_a.jsonl", n=160, seed=1, source="fixa"),
              write_fixture(tmp_path / "routing_b.jsonl", n=160, seed=2, source="fixb")]
    current = Classifier.load()
    rep = propose(public, _rows(), "acme", current, tmp_path / "cand.json", loso=True)
    cand, cur = rep["candidate"], rep["current"]
    assert cand["tenant_held_out"]["auroc"] > cur["tenant_held_out"]["auroc"]
    assert rep["refusal"] is None
    for r in (cand, cur):
        assert set(r["loso"]) >= {"loso_mean", "apgr_mean", "auroc_gold_mean"}
    assert Classifier.load(tmp_path / "cand.json").version == cand["version"] != current.version


def test_worse_refuses_a_candidate_without_rows_or_with_lower_auroc():
    fig = {"n": 10, "auroc": 0.7, "brier": 0.2}
    assert worse({"n": 0, "auroc": None, "brier": None}, fig)
    assert worse({"n": 10, "auroc": 0.6, "brier": 0.1}, fig)
    assert worse({"n": 10, "auroc": 0.71, "brier": 0.3}, fig) is None
    assert worse({"n": 10, "auroc": None, "brier": 0.3}, {"n": 10, "auroc": None, "brier": 0.2})
