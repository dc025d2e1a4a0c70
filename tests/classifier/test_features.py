from __future__ import annotations

from classifier import last_user_text
from classifier.features import HEAD_CHARS, MAX_TOKENS, TAIL_CHARS, conversation, featurize, tokens


def test_last_user_text_picks_last_human_ask_from_parts():
    msgs = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"},
                                     {"type": "image_url", "image_url": {"url": "http://x"}},
                                     {"type": "text", "text": "question"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "1", "content": "tool output"},
    ]
    assert last_user_text(msgs) == "second\n[image]\nquestion"
    conv = conversation(msgs)
    assert conv.user_turns == 2
    assert conv.has_tools
    assert conv.system_chars == len("be nice")


def test_last_user_text_edge_cases():
    assert last_user_text([]) == ""
    assert last_user_text(None) == ""
    assert last_user_text("plain") == "plain"
    # No user turn at all: fall back to the last message with text.
    assert last_user_text([{"role": "tool", "content": "result 42"}]) == "result 42"


def test_cjk_is_tokenised_per_character_and_accents_kept():
    toks = tokens("證明素數有無窮多個")
    assert "證" in toks and "明" in toks
    assert "élève" in tokens("Démontrer que l'élève")


def test_numbers_collapse_and_bigrams_present():
    toks = tokens("add 12 and 345")
    assert "0" in toks and "12" not in toks
    assert "add 0" in toks


def test_huge_prompt_is_truncated_and_bounded():
    text = "word " * 250_000  # ~1.25 MB
    conv = conversation([{"role": "user", "content": text}])
    assert len(conv.ask) <= HEAD_CHARS + TAIL_CHARS + 1
    assert conv.ask_len == len(text)   # length feature still sees the real size
    toks, dense = featurize([{"role": "user", "content": text}])
    assert len(toks) <= 2 * MAX_TOKENS
    assert all(v == v for v in dense)   # no NaN
