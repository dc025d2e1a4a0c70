"""Programming asks of clearly different difficulty, self-written for this test (none is in
../shared/data). The shipped model must keep trivial snippets in the fast tier and lift
multi-requirement programming tasks (data structures, concurrency, systems design,
constrained algorithms) to at least the reasoning tier, with every hard ask scoring above
every trivial one. Written before the vocabulary was checked against them; they are not
the prompts the change was developed on.
"""

from __future__ import annotations

import pytest

HARD_CODE = [
    "Implement a thread-safe bounded blocking queue in Java using a mutex and condition "
    "variables, and explain how you avoid deadlock.",
    "Write a concurrent hash map in Rust that supports lock-free reads, with unit tests for "
    "the resize path.",
    "Implement Dijkstra's algorithm in C++ with a binary heap, handle disconnected graphs, "
    "and state the time complexity.",
    "Build a tokenizer and recursive descent parser in Python for arithmetic expressions "
    "with operator precedence and error reporting.",
    "Implement an AVL tree in Go with insertion, deletion and an in-order iterator.",
]

TRIVIAL_CODE = [
    "How do I lowercase a string in JavaScript?",
    "What does the len function do in Python?",
    "Reverse a string in Python.",
    "Write a function to check if a number is even.",
]

# Known gaps, kept visible rather than tuned away (README "Known limits"):
# - a hard ask whose requirements fall outside the programming vocabulary (only "allocator"
#   and "in C" match, so the multi-requirement floor does not fire);
# - trivial asks mentioning "numbers": that wording is learnt from GSM8K/MATH and puts them
#   in reasoning; the model before this change did the same (0.38 / 0.45).
KNOWN_GAPS = [
    # a design ask in words the programming vocabulary does not list ("caching", "scales",
    # "schema"): no floor, and the lean text model alone scores it 0.44 (threshold 0.45)
    ("Design a URL shortener service: REST API, database schema, caching layer and how it "
     "scales to 10k requests per second.", "hard"),
    ("Write a memory allocator in C with a free list, coalescing of adjacent blocks and "
     "alignment guarantees.", "hard"),
    ("Write a Python function that adds two numbers.", "trivial"),
    ("Print the numbers 1 to 10 in Python.", "trivial"),
]

SMALL_TALK = ["thanks, that helped!", "good morning", "Write a short poem about the sea."]


def _score(clf, p):
    return clf.classify([{"role": "user", "content": p}])


@pytest.mark.parametrize("prompt", HARD_CODE)
def test_multi_requirement_programming_asks_leave_fast(clf, prompt):
    c = _score(clf, prompt)
    assert c.complexity >= clf.thresholds["reasoning"], (prompt, c)
    assert c.tier != "fast"


@pytest.mark.parametrize("prompt", TRIVIAL_CODE)
def test_trivial_code_snippets_stay_fast(clf, prompt):
    assert _score(clf, prompt).tier == "fast", prompt


def test_hard_programming_ranks_above_trivial_code_and_small_talk(clf):
    hard = [_score(clf, p).complexity for p in HARD_CODE]
    easy = [_score(clf, p).complexity for p in TRIVIAL_CODE + SMALL_TALK]
    assert min(hard) > max(easy)


@pytest.mark.parametrize("prompt,kind", KNOWN_GAPS)
def test_known_gaps(clf, prompt, kind):
    c = _score(clf, prompt)
    if (c.tier != "fast") != (kind == "hard"):
        pytest.xfail(f"known gap ({kind} ask scored {c.complexity:.2f}, {c.tier})")


def test_code_floor_is_named_and_needs_several_requirements():
    from classifier.features import DENSE_NAMES, featurize

    i = DENSE_NAMES.index("code_multi")
    # One language + one structure is a snippet, not a multi-requirement task.
    assert featurize("Write a Python function to reverse a linked list.")[1][i] == 0.0
    # A passage that mentions trees twice is not a programming ask.
    assert featurize("She planted a tree, and the trees grew with the rain.")[1][i] == 0.0
    assert featurize(HARD_CODE[0])[1][i] > 0.0


def test_code_floor_signal(clf):
    assert "code_multi" in _score(clf, HARD_CODE[0]).signals


def test_artifact_floor_on_unknown_feature_is_rejected():
    import orjson

    from classifier import Classifier
    from classifier.model import DEFAULT_ARTIFACT

    art = orjson.loads(DEFAULT_ARTIFACT.read_bytes())
    art["floors"] = dict(art["floors"], not_a_feature="reasoning")
    with pytest.raises(ValueError):
        Classifier(art)
