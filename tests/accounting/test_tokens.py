"""Token counts and bounds: the per-text count cache must never change a result."""

from __future__ import annotations

import math

from accounting import tokens as T


def test_cached_counts_equal_fresh_ones_and_the_cache_stays_bounded(monkeypatch) -> None:
    enc = T._load()
    if enc is None:  # no tokenizer on this host: the byte heuristic has nothing to cache
        return
    monkeypatch.setattr(T, "COUNT_CACHE_ENTRIES", 8)
    texts = [f"message {i}: the same words again <|endoftext|>" for i in range(40)] + ["é" * 9, "中文" * 5]
    for _ in range(2):
        for t in texts:
            assert T.count_text_tokens(t) == len(enc.encode(t, disallowed_special=()))
            by_bytes = math.ceil(len(t.encode("utf-8")) / 4)
            assert T._text_bound(t) == max(len(enc.encode(t, disallowed_special=())), by_bytes)
    assert len(T._counts) <= 8


def test_a_text_over_the_cache_size_is_counted_but_not_kept(monkeypatch) -> None:
    enc = T._load()
    if enc is None:
        return
    monkeypatch.setattr(T, "COUNT_CACHE_CHARS", 100)
    T.count_text_tokens("short")
    big = "word " * 100
    assert T.count_text_tokens(big) == len(enc.encode(big, disallowed_special=()))
    assert big not in T._counts and "short" in T._counts
