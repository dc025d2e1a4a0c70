"""The deterministic "model" behind the mock upstream: token counts, prompt cache, answers.

Everything here is a pure function of the request (plus the prompt-cache LRU),
so tests and benchmarks can predict every number the mock reports.

Token counting (``prompt_tokens``)
    per message:  ceil(utf8_bytes(text) / 4) + 4
    prompt total: sum(per message) + 3  (+ ceil(len(json(tools)) / 4) when ``tools`` is set)
    ``text`` is the string content, or the ``text`` parts of a parts list joined
    with "" (each non-text part such as an image counts a flat 85 tokens).
    Anthropic requests count ``system`` as one extra leading message.

Prompt caching (``prompt_tokens_details.cached_tokens``)
    Mirrors OpenAI's automatic caching. For every message prefix of a request
    the mock hashes (model, messages[:i]) and remembers it in an LRU. A later
    request whose leading messages match a remembered prefix gets the largest
    such prefix's tokens cached, rounded *down* to a multiple of 128, and only
    when that prefix is at least ``cache_min_tokens`` (default 256). Prefix
    tokens = sum of the per-message counts of those messages (without the +3).
    The first request with a prefix is a miss (0 cached); an identical repeat
    is a hit. Caches are per model.

Completion tokens
    visible = x-mock-completion-tokens header, else the per-model override,
    else ``completion_tokens`` (default 16).
    Reasoning models (name contains "reason", "o1", "o3", "o4", "r1", or listed
    in ``reasoning_models``) add reasoning tokens from ``reasoning_effort``:
    none 0, minimal 32, low 128, medium 512 (default), high 2048.
    With a cap (``max_completion_tokens`` or else ``max_tokens``):
    reasoning = min(reasoning, cap); visible = min(visible, cap - reasoning).
    completion_tokens = reasoning + visible (reasoning is included, as OpenAI
    reports it). finish_reason is "length" when visible was cut, else "stop".

Content
    First line "Answer: <X>" where X = int(blake2b(question)) % 100 and the
    question is the last user message's text. With probability
    ``disagreement`` (default 0.25), decided by hash(model, question) (plus the
    request's seed/temperature when it sets either, so samples differ), a model
    answers X + 1 + (h % 3) instead, so some agents in a vote disagree while
    most agree; ``disagreement`` 0 makes every model agree. Visible tokens
    beyond the first three are filler words on a second line, one per token,
    so streams have one chunk per visible token.
    With ``difficulty`` on, answers follow simulator/difficulty.py instead.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson

REASONING_EFFORT = {"none": 0, "minimal": 32, "low": 128, "medium": 512, "high": 2048}
_REASONING_MARKERS = ("reason", "o1", "o3", "o4", "r1")
_FILLER = (" lorem", " ipsum", " dolor", " sit", " amet")
IMAGE_TOKENS = 85
BLOCK = 128


def text_of(content: Any) -> tuple[str, int]:
    """(text, extra_tokens) of an OpenAI/Anthropic message content."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if isinstance(content, list):
        parts: list[str] = []
        extra = 0
        for p in content:
            if isinstance(p, dict):
                t = p.get("text")
                if isinstance(t, str):
                    parts.append(t)
                elif p.get("type") not in (None, "text"):
                    extra += IMAGE_TOKENS
            elif isinstance(p, str):
                parts.append(p)
        return "".join(parts), extra
    return str(content), 0


def message_tokens(msg: Any) -> int:
    if not isinstance(msg, dict):
        return 4
    text, extra = text_of(msg.get("content"))
    n = len(text.encode())
    return (n + 3) // 4 + 4 + extra


def is_reasoning_model(model: str, listed: frozenset[str] | set[str] = frozenset()) -> bool:
    if model in listed:
        return True
    m = model.lower()
    return any(k in m for k in _REASONING_MARKERS)


def last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))[0]
    return ""


def _h64(*parts: str) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "big")


def answer_for(model: str, question: str, disagreement: float, sample: str = "") -> int:
    x = _h64(question) % 100
    if disagreement > 0:
        h = _h64(model, question, sample) if sample else _h64(model, question)
        if (h % 10000) < disagreement * 10000:
            x = (x + 1 + (h >> 20) % 3) % 100
    return x


def content_for(model: str, question: str, visible: int, disagreement: float, sample: str = "") -> list[str]:
    """The visible text as a list of per-token pieces (joined = full content)."""
    if visible <= 0:
        return []
    x = answer_for(model, question, disagreement, sample)
    head = ["Answer", ":", f" {x}"]
    if visible <= 3:
        return head[:visible]
    pieces = head + ["\n" + _FILLER[0][1:]]
    pieces.extend(_FILLER[i % 5] for i in range(1, visible - 3))
    return pieces


class PromptCache:
    """LRU of message-prefix hashes -> prefix token counts (see module doc)."""

    def __init__(self, capacity: int = 50_000, min_tokens: int = 256):
        self.capacity = capacity
        self.min_tokens = min_tokens
        self._lru: OrderedDict[bytes, int] = OrderedDict()

    def clear(self) -> None:
        self._lru.clear()

    def lookup_and_store(self, model: str, messages: list[Any], per_msg: list[int]) -> int:
        h = hashlib.blake2b(model.encode(), digest_size=16)
        lru = self._lru
        cum = 0
        best = 0
        for msg, toks in zip(messages, per_msg):
            # orjson with sorted keys so dict ordering does not defeat the cache
            h.update(orjson.dumps(msg, option=orjson.OPT_SORT_KEYS))
            h.update(b"\x1e")
            cum += toks
            key = h.digest()
            if key in lru:
                lru.move_to_end(key)
                best = cum
            else:
                lru[key] = cum
        while len(lru) > self.capacity:
            lru.popitem(last=False)
        if best < self.min_tokens:
            return 0
        return best // BLOCK * BLOCK


def plan_completion(
    *,
    visible: int,
    reasoning_model: bool,
    effort: str | None,
    cap: int | None,
) -> tuple[int, int, str]:
    """(visible_tokens, reasoning_tokens, finish_reason)."""
    reasoning = REASONING_EFFORT.get(effort or "medium", 512) if reasoning_model else 0
    finish = "stop"
    if cap is not None and cap >= 0:
        reasoning = min(reasoning, cap)
        room = cap - reasoning
        if visible > room:
            visible = room
            finish = "length"
    return visible, reasoning, finish


def prompt_tokens_for(messages: list[Any], tools: Any = None) -> tuple[int, list[int]]:
    per = [message_tokens(m) for m in messages]
    total = sum(per) + 3
    if tools:
        total += (len(orjson.dumps(tools)) + 3) // 4
    return total, per
