"""The scorer's shortcuts must featurize exactly as the general code that training uses."""

from __future__ import annotations

import random
from collections import Counter

from classifier import Classifier
from classifier.features import (
    _TOKEN_RE,
    CHEAP_DENSE,
    DENSE_NAMES,
    MAX_TOKENS,
    conversation,
    dense,
    keyword_stats,
    tokens,
)


def _reference_tokens(text: str) -> list[str]:
    """The tokenizer as specified: one Unicode regex, digit runs as '0', then bigrams."""
    toks = ["0" if t[0].isdigit() else t for t in _TOKEN_RE.findall(text.lower())][:MAX_TOKENS]
    return toks + [a + " " + b for a, b in zip(toks, toks[1:])]


SAMPLES = [
    "", " ", "\n\n", "hello", "In two sentences, explain why the sky is blue to a ten-year-old.",
    "HELLO!!! 123abc456 a_b_c __init__ x1y22z333 007 0", "\x00\x01 tab\there\r\nnew\x0bline\x0cfeed\x1cfs",
    "abc中文def 中文abc", "x² + y² = z²", "İstanbul straße", "١٢٣ digits ٤٥", "ﬁnance", "KELVIN \u212a sign",
    "implement a lock free queue in rust with memory ordering, and tests, then include a mutex and thread",
    "prove that 2+2=4 step by step", "word " * 700,
]


def test_ascii_fast_path_tokenizes_like_the_unicode_regex() -> None:
    rng = random.Random(3)
    alphabet = "abcXYZ019 _-.,;:!?\n\t'\"()[]{}\x00\x7f"
    texts = SAMPLES + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))) for _ in range(2000)]
    for t in texts:
        assert tokens(t) == _reference_tokens(t), t


def _reference_stats(toks: list[str]) -> tuple[list[int], int, int]:
    from classifier.features import _JOINERS, _KEYWORDS

    kw, tech, joins = [0] * 5, set(), 0
    for tok in toks:
        c = _KEYWORDS.get(tok)
        if c is not None:
            kw[c] += 1
            if c == 4:
                tech.add(tok)
        elif tok in _JOINERS:
            joins += 1
    return kw, len(tech), joins


def test_keyword_stats_from_counts_equal_a_pass_over_the_tokens() -> None:
    for t in SAMPLES:
        toks = tokens(t)
        assert keyword_stats(toks) == keyword_stats(toks, Counter(toks)) == _reference_stats(toks)


def test_cheap_dense_features_equal_the_full_ones() -> None:
    for t in SAMPLES:
        for msgs in (t, [{"role": "system", "content": "sys"}, {"role": "user", "content": t}]):
            conv = conversation(msgs, None)
            full = dense(conv)
            cheap = dense(conv, tokens(conv.ask), cheap_only=True)
            assert len(full) == len(cheap) == len(DENSE_NAMES)
            assert [full[i] for i in sorted(CHEAP_DENSE)] == [cheap[i] for i in sorted(CHEAP_DENSE)]


def test_a_scorer_needing_other_features_computes_them() -> None:
    clf = Classifier.load()
    art = {"format": "triage-complexity/2", "vocab": ["sky"], "idf": [1.5], "coef": [0.3], "intercept": -1.0,
           "calibration": {"platt": [1.0, 0.0]}, "tiers": [{"name": "fast", "min": 0.0}, {"name": "deep", "min": 0.5}],
           "dense": {"names": ["math_notation"], "mean": [0.0], "std": [1.0], "coef": [2.0]}}
    mathy = Classifier(art)
    assert mathy.score("sky $x^2$ \\frac{1}{2}") > mathy.score("sky")
    assert 0.0 <= clf.score("sky") <= 1.0


def test_a_long_parts_list_is_featurized_as_if_joined() -> None:
    from classifier.features import CONTEXT_SCAN_CHARS, content_text, last_user_text, truncate

    rng = random.Random(5)
    text = " ".join(rng.choice(["prove", "the", "queue", "in", "rust", "42", "\n", "é"]) for _ in range(20_000))
    for k in (1, 7, 999, 1000, 2999, 3001, 4000, 50_000):
        pieces = [text[i:i + k] for i in range(0, len(text), k)]
        for tail in ([], [" ", {"type": "text", "text": "\n"}], [{"type": "image_url", "image_url": {"url": "x"}}]):
            parts = [{"type": "text", "text": p} for p in pieces] + tail
            msgs = [{"role": "system", "content": parts[:3]}, {"role": "user", "content": parts},
                    {"role": "assistant", "content": [{"type": "text", "text": "  "}]}]
            conv = conversation(msgs)
            full = last_user_text(msgs)
            assert (conv.ask, conv.ask_len) == (truncate(full), len(full))
            sys_len = min(len(content_text(parts[:3])), CONTEXT_SCAN_CHARS)
            assert conv.system_chars == sys_len
            assert conv.context_chars == max(0, min(len(full), CONTEXT_SCAN_CHARS) + 2 - len(full))
    blank = [{"role": "user", "content": [" ", {"type": "text", "text": "\n"}]}, {"role": "assistant", "content": "x"}]
    assert conversation(blank).ask == "x" == last_user_text(blank)
