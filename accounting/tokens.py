"""Token counting for metering streams and sizing reservations.

The encoding is loaded once per process. We use tiktoken's ``o200k_base`` and
fall back to the copy litellm bundles (its tokenizer directory holds tiktoken
cache files named by the SHA-1 of the download URL), so an offline host still
counts real tokens; with neither we use a bytes/4 heuristic.

``estimate_prompt_tokens`` sizes a reservation, so it must not under-count for
any upstream tokenizer: it takes max(tiktoken count, ceil(utf8 bytes / 4)) per
message — the byte bound protects scripts and tokenizers that split finer than
o200k — plus a per-message overhead of 8 tokens (role, separators; OpenAI uses
3-4) and a fixed 8 for the reply primer and tool/format scaffolding. Images and
other non-text parts are charged a flat 1,000 tokens each, a conservative
ceiling for a low/auto-detail image tile.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import math
import os
import threading
from pathlib import Path
from typing import Any

PER_MESSAGE_OVERHEAD = 8
PER_REQUEST_OVERHEAD = 8
NON_TEXT_PART_TOKENS = 1000
_O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"

_enc: Any = None
_enc_loaded = False
_lock = threading.Lock()


def _bundled_bpe() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if not spec or not spec.submodule_search_locations:
        return None
    name = hashlib.sha1(_O200K_URL.encode()).hexdigest()
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "litellm_core_utils" / "tokenizers" / name
        if p.is_file():
            return p
    return None


def _load() -> Any:
    global _enc, _enc_loaded
    if _enc_loaded:
        return _enc
    with _lock:
        if _enc_loaded:
            return _enc
        try:
            import tiktoken  # noqa: PLC0415 - loaded once, lazily, off the import path

            try:
                if os.environ.get("TIKTOKEN_CACHE_DIR") is None and _bundled_bpe() is not None:
                    raise LookupError  # prefer the local copy over a network fetch
                _enc = tiktoken.get_encoding("o200k_base")
            except Exception:  # noqa: BLE001 - offline: build it from litellm's bundled file
                p = _bundled_bpe()
                if p is not None:
                    ranks = {
                        base64.b64decode(tok): int(rank)
                        for tok, rank in (line.split() for line in p.read_bytes().splitlines() if line)
                    }
                    _enc = tiktoken.Encoding(
                        name="o200k_base",
                        pat_str=_O200K_PAT,
                        mergeable_ranks=ranks,
                        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
                    )
        except Exception:  # noqa: BLE001 - no tokenizer at all: heuristic only
            _enc = None
        if _enc is not None:
            # The Rust core holds its own copy of the ranks; the Python dict (~30 MB) only serves pickling.
            _enc._mergeable_ranks = {}
        _enc_loaded = True
        return _enc


_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def warm() -> None:
    """Load the encoding now (call at startup so the first request doesn't pay for it)."""
    _load()


# text -> its o200k token count. The same texts come back: a request's messages are counted for its hold,
# then again for billing or the counterfactual, and a conversation resends its system prompt and history on
# every turn (a 50k-token history costs ~7 ms to count). Bounded by the characters it keeps alive; when
# full it starts over, which costs one recount per hot text.
_counts: dict[str, int] = {}
_counted_chars = 0
COUNT_CACHE_CHARS = 2_000_000
COUNT_CACHE_ENTRIES = 20_000


def _tiktoken_len(enc: Any, text: str) -> int:
    global _counted_chars
    n = _counts.get(text)
    if n is None:
        n = len(enc.encode_ordinary(text))  # = encode(text, disallowed_special=()): specials count as text
        size = len(text)
        if size <= COUNT_CACHE_CHARS:
            if _counted_chars + size > COUNT_CACHE_CHARS or len(_counts) >= COUNT_CACHE_ENTRIES:
                _counts.clear()
                _counted_chars = 0
            _counts[text] = n
            _counted_chars += size
    return n


def count_text_tokens(text: str) -> int:
    """Tokens in generated text (for billing a cut-off stream): a best count, not a bound."""
    if not text:
        return 0
    enc = _enc if _enc_loaded else _load()
    if enc is None:
        return math.ceil(len(text.encode("utf-8")) / 4)
    return _tiktoken_len(enc, text)


def _text_bound(text: str) -> int:
    if not text:
        return 0
    enc = _enc if _enc_loaded else _load()
    # ASCII is one byte a character, so the byte bound needs no encoding
    by_bytes = (len(text) + 3) // 4 if text.isascii() else math.ceil(len(text.encode("utf-8")) / 4)
    if enc is None:
        return by_bytes
    n = _tiktoken_len(enc, text)
    return n if n > by_bytes else by_bytes


def _content_bound(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return _text_bound(content)
    if isinstance(content, list):
        n = 0
        for part in content:
            if isinstance(part, dict):
                if part.get("type") in (None, "text", "input_text"):
                    n += _text_bound(str(part.get("text") or ""))
                else:
                    n += NON_TEXT_PART_TOKENS
            else:
                n += _text_bound(str(part))
        return n
    return _text_bound(str(content))


def estimate_prompt_tokens(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    """Conservative upper bound on the prompt tokens of a chat request (see module doc)."""
    n = PER_REQUEST_OVERHEAD
    for m in messages or []:
        n += PER_MESSAGE_OVERHEAD + _content_bound(m.get("content"))
        if m.get("name"):
            n += _text_bound(str(m["name"]))
        if m.get("tool_calls"):
            import orjson  # noqa: PLC0415 - rare path

            n += _text_bound(orjson.dumps(m["tool_calls"]).decode())
    if tools:
        import orjson  # noqa: PLC0415

        n += _text_bound(orjson.dumps(tools).decode())
    return n


def count_prompt_tokens(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    """Best estimate (not a bound) of the prompt tokens a provider bills for these messages: what an
    estimated call is billed at when the provider gave no usage (OpenAI's ~3 tokens per message plus 3
    to prime the reply; images at their low-detail 85)."""
    import orjson  # noqa: PLC0415

    n = 3
    for m in messages or []:
        n += 3
        c = m.get("content")
        if isinstance(c, str):
            n += count_text_tokens(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict) and part.get("type") in (None, "text", "input_text"):
                    n += count_text_tokens(str(part.get("text") or ""))
                else:
                    n += 85
        elif c is not None:
            n += count_text_tokens(str(c))
        if m.get("name"):
            n += 1 + count_text_tokens(str(m["name"]))
        if m.get("tool_calls"):
            n += count_text_tokens(orjson.dumps(m["tool_calls"]).decode())
    if tools:
        n += count_text_tokens(orjson.dumps(tools).decode())
    return n
