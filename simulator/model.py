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


# ---------------------------------------------------------------- tool calls and structured output
#
# Tool calls: a request with function `tools` (and tool_choice not "none", and
# whose last message is not a tool result) is answered with tool calls instead
# of text. tool_choice naming a function calls that one; otherwise, when
# parallel_tool_calls is not false, every offered tool is called in order (up
# to MAX_PARALLEL), else the one picked by hash(question). Arguments are an
# instance of the tool's `parameters` schema (see `instance_of`), seeded by
# (question, tool name), and by the model too for the `disagreement` share of
# (model, question) pairs, as answers are. Ids are hash(model, question, i).
# Structured output: response_format json_object -> {"answer": X};
# json_schema -> an instance of the schema. Both are the content, streamed in
# JSON_PIECE-character pieces; tool arguments stream the same way.

MAX_PARALLEL = 3
JSON_PIECE = 8


def instance_of(schema: Any, seed: int, depth: int = 0) -> Any:
    """A deterministic value that validates against a (simple) JSON schema."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    if "enum" in schema and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    for k in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(k), list) and schema[k]:
            return instance_of(schema[k][0], seed, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object" or (t is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {k: instance_of(v, _h64(str(seed), k), depth + 1) for k, v in props.items()}
    if t == "array":
        return [instance_of(schema.get("items") or {"type": "string"}, seed, depth + 1)]
    if t == "integer":
        return seed % 100
    if t == "number":
        return (seed % 1000) / 10
    if t == "boolean":
        return seed % 2 == 0
    if t == "null":
        return None
    return f"v{seed % 10000}"


def _seed(model: str, question: str, name: str, disagreement: float) -> int:
    s = _h64(question, name)
    if disagreement > 0 and (_h64(model, question) % 10000) < disagreement * 10000:
        s = _h64(model, question, name)
    return s


def tool_calls_for(model: str, messages: list[Any], body: dict[str, Any], disagreement: float) -> list[dict[str, Any]]:
    """The tool calls the mock answers with, or [] for a text answer (rules in the comment above)."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return []
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") in ("tool", "function"):
        return []
    if isinstance(choice, dict):
        want = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t["function"].get("name") == want][:1]
    elif body.get("parallel_tool_calls") is False:
        question = last_user_text(messages)
        chosen = [tools[_h64(question) % len(tools)]]
    else:
        chosen = tools[:MAX_PARALLEL]
    question = last_user_text(messages)
    calls = []
    for i, t in enumerate(chosen):
        fn = t["function"]
        name = str(fn.get("name", "tool"))
        args = instance_of(fn.get("parameters") or {"type": "object", "properties": {}}, _seed(model, question, name, disagreement))
        calls.append({
            "id": "call_" + format(_h64(model, question, str(i)), "016x"),
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()},
        })
    return calls


def structured_content(model: str, question: str, response_format: Any, disagreement: float) -> str | None:
    """JSON content for response_format json_object / json_schema, else None."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return orjson.dumps({"answer": answer_for(model, question, disagreement)}).decode()
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return orjson.dumps(instance_of(schema, _seed(model, question, "schema", disagreement))).decode()
    return None


def pieces_of(text: str, size: int = JSON_PIECE) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def tool_call_tokens(calls: list[dict[str, Any]]) -> int:
    return sum((len(c["function"]["name"]) + len(c["function"]["arguments"]) + 3) // 4 + 3 for c in calls)


# ---------------------------------------------------------------- embeddings
#
# Each input gets a unit vector of `dimensions` (default EMBED_DIM) floats derived from
# blake2b(model, text); usage.prompt_tokens = sum over inputs of ceil(utf8_bytes / 4)
# (token-array inputs count their length).

EMBED_DIM = 8


def embedding_for(model: str, text: str, dim: int = EMBED_DIM) -> list[float]:
    raw = [((_h64(model, text, str(i)) % 20001) - 10000) / 10000 for i in range(dim)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in raw]


def embeddings_response(model: str, inp: Any, dim: int | None = None) -> dict[str, Any]:
    items = inp if isinstance(inp, list) and inp and not all(isinstance(x, int) for x in inp) else [inp]
    data, tokens = [], 0
    for i, x in enumerate(items):
        if isinstance(x, list):
            text, n = " ".join(str(t) for t in x), len(x)
        else:
            text = str(x)
            n = (len(text.encode()) + 3) // 4
        tokens += n
        data.append({"object": "embedding", "index": i, "embedding": embedding_for(model, text, dim or EMBED_DIM)})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
