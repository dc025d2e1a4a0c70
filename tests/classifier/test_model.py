from __future__ import annotations

import json

import pytest

from classifier import Classification, Classifier
from classifier.model import DEFAULT_ARTIFACT, artifact_version

EASY = ["hi!", "thanks a lot", "what's the weather in Paris?", "set a timer for 10 minutes",
        "tell me a joke", "good morning"]
HARD = [
    "Prove that there are infinitely many primes of the form 4k+3. Give a rigorous proof.",
    "Let $f(x)=x^3-3x+1$. Find all real roots and prove $\\int_0^1 f(x)dx < 1$, step by step.",
    "Find the number of ordered pairs $(a,b)$ of integers with $1 \\le a,b \\le 100$ such that "
    "$a^2+b^2$ is divisible by 7.",
    "Design a lock-free MPMC queue in C++, analyse the memory ordering and prove linearizability.",
]


def test_artifact_is_plain_json_not_pickle():
    raw = DEFAULT_ARTIFACT.read_bytes()
    assert not raw.startswith(b"\x80")            # pickle protocol marker
    data = json.loads(raw)                         # parses with the stdlib JSON parser
    assert data["format"] == "triage-complexity/2"
    assert data["version"] == artifact_version(data)          # content hash, so equal bytes = equal version
    assert DEFAULT_ARTIFACT.stat().st_size < 20 * 1024 * 1024


def test_loads_with_ordered_thresholds():
    clf = Classifier.load()  # load time: bench/classifier_bench.py
    th = clf.thresholds
    assert 0 < th["reasoning"] < th["deliberate"] < 1


def test_rejects_foreign_artifact(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError):
        Classifier.load(p)


def test_output_shape_and_determinism(clf):
    msgs = [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]
    a = clf.classify(msgs)
    b = clf.classify(msgs)
    c = Classifier.load().classify(msgs)
    assert isinstance(a, Classification)
    assert a == b == c
    assert 0.0 <= a.complexity <= 1.0
    assert a.tier in {n for n, _ in clf.tiers}
    assert a.version == clf.version and a.version.startswith("cx2-")
    assert a.tier == clf.tier_for(a.complexity)
    assert all(isinstance(s, str) for s in a.signals) and len(a.signals) <= 3


@pytest.mark.parametrize("req", [
    [],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}]}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [{}]},
     {"role": "tool", "tool_call_id": "x", "content": "{\"temp\": 21}"}],
    [{"role": "user", "content": "証明してください：素数は無限に存在する。"}],
    [{"role": "user", "content": "Démontrez que la somme des angles d'un triangle vaut 180°."}],
    "a bare string prompt",
    [{"role": "system", "content": "x" * 5000}, {"role": "user", "content": "hello"}],
])
def test_edge_cases_give_valid_output(clf, req):
    c = clf.classify(req)
    assert 0.0 <= c.complexity <= 1.0 and c.tier in {n for n, _ in clf.tiers}


def test_one_megabyte_prompt_completes_and_is_bounded(clf):
    head = "Prove the following lemma about graphs. "
    big = head + ("the quick brown fox jumps over the lazy dog " * 25_000)
    assert len(big) > 1_000_000
    c = clf.classify([{"role": "user", "content": big}])
    assert 0.0 <= c.complexity <= 1.0
    # Bounded cost means only head+tail are read: a different middle changes nothing lexical.
    big2 = big[:5000] + ("lorem ipsum " * 80_000)[: len(big) - 6000] + big[-1000:]
    assert abs(clf.classify([{"role": "user", "content": big2}]).complexity - c.complexity) < 0.05


def test_batch_matches_single(clf):
    reqs = [[{"role": "user", "content": p}] for p in EASY + HARD]
    assert clf.classify_batch(reqs) == [clf.classify(r) for r in reqs]


def test_default_model_orders_smalltalk_below_proofs_and_maths(clf):
    easy = [clf.classify([{"role": "user", "content": p}]).complexity for p in EASY]
    hard = [clf.classify([{"role": "user", "content": p}]).complexity for p in HARD]
    assert max(easy) < min(hard)
    assert all(clf.classify(p).tier == "fast" for p in EASY)
    # Proofs, maths and the code-design ask leave the fast tier (more coding asks in
    # test_coding_asks.py).
    assert all(clf.classify(p).tier != "fast" for p in HARD)


def test_signals_explain_maths(clf):
    c = clf.classify([{"role": "user", "content": HARD[1]}])
    assert c.signals, "a high-complexity decision should name its drivers"


def test_explicit_proof_or_step_by_step_ask_never_lands_in_fast(clf):
    for p in ["Prove Fermat's little theorem.", "Work it out step by step: is 221 prime?",
              "Derive the quadratic formula."]:
        c = clf.classify(p)
        assert c.tier != "fast", p
        assert "asks_reasoning" in c.signals
    assert clf.classify("What's a good name for a cat?").tier == "fast"


def test_tier_names_and_thresholds_come_from_the_artifact():
    import orjson
    art = orjson.loads(DEFAULT_ARTIFACT.read_bytes())
    art.pop("floors", None)   # they name the shipped tiers
    art["tiers"] = [{"name": "cheap", "min": 0.0}, {"name": "mid", "min": 0.3}, {"name": "top", "min": 0.6},
                    {"name": "panel", "min": 0.9}]
    clf = Classifier(art)
    assert clf.thresholds == {"mid": 0.3, "top": 0.6, "panel": 0.9}
    assert [clf.tier_for(p) for p in (0.1, 0.3, 0.7, 0.95)] == ["cheap", "mid", "top", "panel"]
    assert clf.classify("hello").tier in {"cheap", "mid", "top", "panel"}


@pytest.mark.parametrize("mutate", [
    lambda a: a.pop("vocab"),
    lambda a: a.update(coef=a["coef"][:-1]),
    lambda a: a.update(tiers=[{"name": "fast", "min": 0.2}]),
    lambda a: a.update(tiers=[{"name": "fast", "min": 0.0}, {"name": "b", "min": 0.5}, {"name": "c", "min": 0.4}]),
    lambda a: a.update(dense={"names": ["not_a_feature"], "mean": [0], "std": [1], "coef": [1]}),
    lambda a: a.update(floors={"asks_reasoning": {"tier": "no_such_tier"}}),
])
def test_malformed_artifacts_are_refused_with_value_error(mutate):
    import orjson
    art = orjson.loads(DEFAULT_ARTIFACT.read_bytes())
    mutate(art)
    with pytest.raises(ValueError):
        Classifier(art)


def test_load_errors_are_value_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b"\x80\x04not json")
    with pytest.raises(ValueError):
        Classifier.load(p)
