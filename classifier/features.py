"""Pure, bounded-cost feature extraction shared by training and inference.

Training and serving must featurize identically, so everything the model sees is
computed here: the text of the last human ask (truncated head+tail so a 1 MB prompt
costs the same as a 4 KB one), lexical tokens (stable, no hash()), and a small dense
vector of conversation/shape features whose names double as human-readable signals.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

# Head+tail of the last ask: the question is usually at the start, the actual
# instruction ("answer with ...", "prove it") often at the end.
HEAD_CHARS = 3000
TAIL_CHARS = 1000
MAX_TOKENS = 600
# Context other than the last ask only contributes sizes and counts; cap the scan.
CONTEXT_SCAN_CHARS = 20_000

# CJK/kana/hangul have no spaces: one token per character, otherwise a whole
# sentence would be one never-seen token.
_TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W\d_]+|\d+")
# bytes.translate table for lower-cased ASCII: a-z kept, digits -> "0", every other byte -> space
_ASCII_SEP = bytes(b if 97 <= b <= 122 else 48 if 48 <= b <= 57 else 32 for b in range(256))
_MATH_RE = re.compile(
    r"\$|\\(?:frac|sqrt|sum|int|prod|lim|cdot|times|le|ge|neq|infty|pi|theta|alpha|begin)"
    r"|[∑∫√≤≥≠∞∀∃∈πθ±×÷]|\^|\d\s*[-+*/=<>]\s*\d"
)
# Keyword families are matched on the token stream (uni+bigrams) with one dict lookup
# per token: a regex alternation scanned at every character cost ~25 us per prompt.
_KEYWORDS: dict[str, int] = {}
for _cat, _words in enumerate((
    # 0: explicit reasoning asks
    # ("justify", "chain of" were dropped: "justify text", "chain of command")
    ("prove", "proof", "derive", "rigorous", "rigorously", "step by",
     "show that", "think carefully", "think through"),
    # 1: complex tasks
    ("implement", "design", "architect", "optimize", "optimise", "debug", "refactor", "analyze",
     "analyse", "compare", "evaluate", "critique", "algorithm", "complexity", "tradeoff", "tradeoffs",
     "write a", "build a"),
    # 2: constraints
    ("must", "should", "exactly", "only", "ensure", "constraint", "constraints", "without",
     "at least", "at most"),
    # 3: code keywords
    ("def", "class", "return", "import", "function", "include", "const", "void", "public", "lambda",
     "printf", "println", "struct", "async", "await", "self"),
    # 4: programming-task vocabulary: languages, data structures, algorithms, concurrency,
    # systems; singular forms only, so "tree ... trees" is one term. Counted as *distinct*
    # terms: a substantive programming ask names several technical requirements ("lock-free
    # queue ... C++ ... memory ordering"), a trivial snippet one or two ("reverse a string
    # in Python"). The code_task weight is learned; code_multi also drives a tier floor.
    ("python", "rust", "java", "javascript", "typescript", "golang", "haskell", "kotlin", "swift",
     "scala", "ruby", "php", "sql", "cuda", "cpp", "in c", "in go",
     "linked list", "binary tree", "tree", "queue", "stack", "heap", "hash", "hashmap",
     "trie", "graph", "cache", "lru", "array", "matrix", "red black", "avl", "b tree",
     "mutex", "lock", "thread", "multithreaded", "concurrent", "concurrency",
     "atomic", "deadlock", "race condition", "memory ordering", "lock free",
     "thread safe", "allocator", "parser", "compiler", "interpreter", "tokenizer", "scheduler",
     "distributed", "consensus", "database", "transaction", "api", "server",
     "microservice", "protocol", "latency", "throughput", "scalable",
     "dynamic programming", "time complexity", "space complexity", "recursion", "recursive",
     "binary search", "dijkstra", "sorting", "insertion", "deletion", "amortized", "invariant",
     "kernel", "socket", "pipeline", "regex", "unit tests",
     "edge cases", "o n", "o log", "big o", "flask", "django", "react", "redis", "docker",
     "kubernetes", "postgres", "postgresql", "mongodb", "grpc", "websocket"),
)):
    for _w in _words:
        _KEYWORDS[_w] = _cat
# Tokens that join requirements of one ask ("... with X and Y, then Z").
_JOINERS = frozenset(("and", "with", "then", "while", "including", "include", "plus", "also"))
# Both in one table, a keyword family winning over joining ("include"): family 5 is a joiner.
_FAMILY = {**{j: 5 for j in _JOINERS}, **_KEYWORDS}
_LEXICON = frozenset(_FAMILY)
_SIMPLE_RE = re.compile(
    r"^\s*(?:hi|hello|hey|thanks|thank you|good (?:morning|night)|what(?:'s| is) the (?:time|weather|date)|"
    r"set (?:a|an) |remind me|translate|define|who is|what is|how do you say|tell me a joke)\b"
)
_LIST_RE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s", re.M)

DENSE_NAMES: tuple[str, ...] = (
    "long_prompt",        # log chars of the ask
    "many_words",         # log words
    "many_lines",         # log lines
    "multi_turn",         # log user turns
    "long_system_prompt", # log system chars
    "tool_use",           # tools / tool messages present
    "code",               # code markers
    "math_notation",      # maths symbols / LaTeX
    "numbers",            # log count of numbers
    "multi_question",     # question marks
    "asks_reasoning",     # step by step / prove / derive ... (also a tier floor, see model)
    "complex_task",       # implement / design / optimise ...
    "simple_ask",         # greeting / assistant-command style
    "structured_list",    # numbered or bulleted lines
    "constraints",        # must / exactly / at most ...
    "non_ascii",          # share of non-ASCII chars
    "long_words",         # mean token length
    "long_context",       # log chars of earlier turns
    "code_task",          # distinct programming-task terms (language, data structure, ...)
    "code_multi",         # code_task x requirement joiners/verbs: multi-part programming ask
)
N_DENSE = len(DENSE_NAMES)
ASKS_REASONING = DENSE_NAMES.index("asks_reasoning")


def content_text(content: Any) -> str:
    """Text of an OpenAI message content: str, parts list, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "\n".join(_pieces(content))
    if isinstance(content, Mapping):
        t = content.get("text")
        return t if isinstance(t, str) else ""
    return str(content)


def _pieces(content: list[Any] | tuple[Any, ...]) -> list[str]:
    """The texts content_text() joins with newlines, for a list of parts."""
    out = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
        elif type(part) is dict or isinstance(part, Mapping):
            t = part.get("text")
            if isinstance(t, str):
                out.append(t)
            elif part.get("type") in ("image_url", "input_image", "image"):
                out.append("[image]")
    return out


def _joined_len(pieces: list[str]) -> int:
    return sum(map(len, pieces)) + len(pieces) - 1 if pieces else 0


def _text_len(content: Any) -> int:
    """len(content_text(content)), without joining a list of parts."""
    if isinstance(content, (list, tuple)):
        return _joined_len(_pieces(content))
    return len(content_text(content))


def _ask(content: Any) -> tuple[str, int] | None:
    """(truncate(text), len(text)) of a message's text, None when it is blank. A list of parts is not
    joined whole: a 1M-token prompt sent as parts costs what one of 4,000 characters does."""
    if not isinstance(content, (list, tuple)):
        text = content_text(content)
        return (truncate(text), len(text)) if text and not text.isspace() else None
    pieces = _pieces(content)
    if not any(p and not p.isspace() for p in pieces):  # the newlines between them are blank too
        return None
    n = _joined_len(pieces)
    if n <= HEAD_CHARS + TAIL_CHARS:
        return "\n".join(pieces), n
    return _edge(pieces, HEAD_CHARS)[:HEAD_CHARS] + "\n" + _edge(pieces[::-1], TAIL_CHARS, True)[-TAIL_CHARS:], n


def _edge(pieces: list[str], size: int, backwards: bool = False) -> str:
    """The newline-join of the fewest leading pieces (trailing, when `backwards` gives them reversed)
    that is at least `size` long."""
    acc: list[str] = []
    n = -1
    for p in pieces:
        acc.append(p)
        n += len(p) + 1
        if n >= size:
            break
    return "\n".join(reversed(acc) if backwards else acc)


def _last_ask(messages: Sequence[Mapping[str, Any]]) -> tuple[str, int, Any]:
    """(truncated text, full length, the message) of what last_user_text() picks."""
    for msg in reversed(messages):
        if (type(msg) is dict or isinstance(msg, Mapping)) and msg.get("role") == "user":
            a = _ask(msg.get("content"))
            if a is not None:
                return (*a, msg)
    for msg in reversed(messages):
        if type(msg) is dict or isinstance(msg, Mapping):
            a = _ask(msg.get("content"))
            if a is not None:
                return (*a, msg)
    return "", 0, None


def last_user_text(messages: Sequence[Mapping[str, Any]] | str | None) -> str:
    """The last human ask; falls back to the last message with text (e.g. tool-only turns)."""
    if messages is None:
        return ""
    if isinstance(messages, str):
        return messages
    # type() first: isinstance against the Mapping ABC is the slow part for the plain dicts that come in;
    # isspace() rather than strip(): the same test without copying a long prompt.
    for msg in reversed(messages):
        if (type(msg) is dict or isinstance(msg, Mapping)) and msg.get("role") == "user":
            text = content_text(msg.get("content"))
            if text and not text.isspace():
                return text
    for msg in reversed(messages):
        if type(msg) is dict or isinstance(msg, Mapping):
            text = content_text(msg.get("content"))
            if text and not text.isspace():
                return text
    return ""


def truncate(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


class Conversation:
    """What the featurizer needs from a request, extracted once."""

    __slots__ = ("ask", "ask_len", "user_turns", "system_chars", "context_chars", "has_tools")

    def __init__(self, ask: str, ask_len: int, user_turns: int = 1, system_chars: int = 0,
                 context_chars: int = 0, has_tools: bool = False) -> None:
        self.ask = ask
        self.ask_len = ask_len
        self.user_turns = user_turns
        self.system_chars = system_chars
        self.context_chars = context_chars
        self.has_tools = has_tools


def conversation(messages: Sequence[Mapping[str, Any]] | str | None, tools: Any = None) -> Conversation:
    if messages is None or isinstance(messages, str):
        text = messages or ""
        return Conversation(truncate(text), len(text), 1 if text else 0, 0, 0, bool(tools))
    ask, ask_len, ask_msg = _last_ask(messages)
    user_turns = system_chars = context_chars = 0
    has_tools = bool(tools)
    for msg in messages:
        if type(msg) is not dict and not isinstance(msg, Mapping):
            continue
        role = msg.get("role")
        if role == "user":
            user_turns += 1
        if role == "tool" or msg.get("tool_calls") or msg.get("function_call"):
            has_tools = True
        content = msg.get("content")
        if isinstance(content, str):
            size = len(content)
        else:
            size = min(ask_len if msg is ask_msg else _text_len(content), CONTEXT_SCAN_CHARS)
        if role in ("system", "developer"):
            system_chars += size
        else:
            context_chars += size
    context_chars = max(0, context_chars - ask_len)
    return Conversation(ask, ask_len, user_turns, system_chars, context_chars, has_tools)


def tokens(text: str) -> list[str]:
    """Lower-cased unigrams + adjacent bigrams; numbers collapse to '0' (value rarely matters)."""
    low = text.lower()
    if low.isascii():
        # The tokens _TOKEN_RE finds in ASCII (once lowered: runs of [a-z], runs of [0-9] as "0") without
        # a regex: every byte but a letter becomes a space or, for a digit, "0"; a run of those collapses
        # to one "0" that gets spaces around it; splitting on spaces leaves the tokens, in order.
        sep = low.encode().translate(_ASCII_SEP)
        if 48 in sep:  # a digit
            while b"00" in sep:
                sep = sep.replace(b"00", b"0")
            sep = sep.replace(b"0", b" 0 ")
        toks = sep.decode().split()
    else:
        toks = ["0" if t[0].isdigit() else t for t in _TOKEN_RE.findall(low)]
    if len(toks) > MAX_TOKENS:
        del toks[MAX_TOKENS:]
    return toks + list(map(" ".join, zip(toks, toks[1:])))


def keyword_stats(toks: Iterable[str], counts: Mapping[str, int] | None = None) -> tuple[list[int], int, int]:
    """(hits per keyword family, distinct programming terms, requirement joiners), from the tokens or,
    equivalently and cheaper, from their counts."""
    if counts is None:
        counts = Counter(toks)
    kw = [0, 0, 0, 0, 0, 0]  # the families, then the joiners
    tech = 0
    for tok in _LEXICON.intersection(counts):  # in C: the loop only sees the few hits
        c = _FAMILY[tok]
        kw[c] += counts[tok]
        if c == 4:
            tech += 1
    joins = kw.pop()
    return kw, tech, joins


# Features computed from the conversation's sizes, the keyword counts and a couple of str.count calls:
# a scorer whose artifact needs only these skips the word split and the regex scans.
CHEAP_DENSE = frozenset(DENSE_NAMES.index(n) for n in (
    "long_prompt", "multi_turn", "long_system_prompt", "tool_use", "multi_question", "asks_reasoning",
    "complex_task", "constraints", "long_context", "code_task", "code_multi"))


def dense(conv: Conversation, toks: list[str] | None = None,
          stats: tuple[list[int], int, int] | None = None, cheap_only: bool = False) -> list[float]:
    """The N_DENSE hand features; `stats` is keyword_stats() when the caller has it. With `cheap_only`,
    the features outside CHEAP_DENSE are left at 0.0."""
    t = conv.ask
    if stats is None:
        stats = keyword_stats(tokens(t) if toks is None else toks)
    kw, tech, joins = stats
    x = [
        math.log1p(conv.ask_len),
        0.0,
        0.0,
        math.log1p(conv.user_turns),
        math.log1p(conv.system_chars),
        1.0 if conv.has_tools else 0.0,
        0.0,
        0.0,
        0.0,
        math.log1p(t.count("?")),
        math.log1p(kw[0]),
        math.log1p(kw[1]),
        0.0,
        0.0,
        math.log1p(kw[2]),
        0.0,
        0.0,
        math.log1p(conv.context_chars),
        math.log1p(tech),
        # Only an ask naming 3+ programming terms AND stringing requirements together; one
        # language + one structure ("reverse a linked list in Python") stays 0. Capped so a
        # long passage that happens to mention "tree" and "graph" cannot run it up.
        math.log1p(min(tech - 2, 4) * min(kw[1] + joins + t.count(","), 8)) if tech > 2 else 0.0,
    ]
    if cheap_only:
        return x
    words = t.split()
    n_words = len(words)
    non_ascii = 0.0
    if t:
        # encode() runs in C; the byte surplus approximates the non-ASCII share.
        non_ascii = min(1.0, (len(t.encode("utf-8")) - len(t)) / (2.0 * len(t)))
    mean_word = (sum(map(len, words)) / n_words) if n_words else 0.0
    code = kw[3] + 3 * t.count("```") + t.count(";\n") + t.count("{\n") + t.count("=>") + t.count("()")
    x[1] = math.log1p(n_words)
    x[2] = math.log1p(t.count("\n") + 1 if t else 0)
    x[6] = math.log1p(code)
    x[7] = math.log1p(len(_MATH_RE.findall(t)))
    x[8] = math.log1p(sum(1 for w in words if w[:1].isdigit()))
    x[12] = 1.0 if _SIMPLE_RE.match(t[:80].lower()) else 0.0
    x[13] = math.log1p(len(_LIST_RE.findall(t)))
    x[15] = non_ascii
    x[16] = min(mean_word, 20.0)
    return x


def featurize(messages: Sequence[Mapping[str, Any]] | str | None, tools: Any = None) -> tuple[list[str], list[float]]:
    conv = conversation(messages, tools)
    toks = tokens(conv.ask)
    return toks, dense(conv, toks)


def featurize_many(items: Iterable[Any]) -> tuple[list[list[str]], list[list[float]]]:
    toks, dens = [], []
    for m in items:
        a, b = featurize(m)
        toks.append(a)
        dens.append(b)
    return toks, dens
