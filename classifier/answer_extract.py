"""What an answer says, by kind: a choice, a final number, normalised text, JSON.

Pure and bounded: every scan is over a capped slice of the answer, no I/O. Real model
outputs wrap the payload in prose ("The correct answer is **(B)** because ..."), chains of
thought ("... so she has 18. #### 18"), LaTeX (``\\boxed{\\frac{1}{2}}``) or markdown
fences; each extractor returns None when it finds nothing, which is itself a signal (an
answer whose payload cannot be found is more often wrong).
"""

from __future__ import annotations

import json
import re
import string
from fractions import Fraction
from typing import Any

MAX_SCAN = 20_000          # answers longer than this are judged by their head and tail
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "“”‘’")


def clip(text: str) -> str:
    if len(text) <= MAX_SCAN:
        return text
    return text[: MAX_SCAN // 2] + "\n" + text[-MAX_SCAN // 2:]


# Completion-style models answering a few-shot prompt often go on to write the next
# example ("...The answer is 18.\n\nQ: Next question..."); only the first part is theirs.
_CONTINUATION = re.compile(r"\n\s*(?:Q|Question|Problem|Human|User|Input)\s*(?:\d+\s*)?:", re.I)


def trim_continuation(answer: str) -> str:
    m = _CONTINUATION.search(answer, 1)
    return answer[:m.start()] if m and answer[:m.start()].strip() else answer


# ---------------------------------------------------------------- multiple choice
# Options laid out one per line: "A. foo", "(B) bar", "C) baz", "D: qux".
_OPT_LINE = re.compile(r"(?m)^\s*\(?([A-J])[\.\):]\s+(\S.*)$")
_OPT_INLINE = re.compile(r"\(([A-J])\)\s*([^()\n]+?)(?=\s*\([A-J]\)|\s*$|\n)")
# "the answer is (B)", "Answer: B", "correct option is B"; a bare "Option C is wrong"
# in an explanation is not a commitment, so plain option mentions are not markers.
_ANS_MARKERS = re.compile(
    r"(?:answer|correct (?:option|choice)|best (?:option|choice)|i (?:choose|pick|select)|option|choice)"
    r"\s*(?:is|:|would be|should be|=)\s*(?:option|choice)?\s*[:\-]?\s*[\*\(\[\s]*([A-J])(?![A-Za-z])", re.I)
_LEADING = re.compile(r"^\s*[\*\(\[\"']*\s*([A-J])\s*(?:[\.\):\]\*]|$|\n)")
_TRAILING = re.compile(r"(?:^|[\s:,\*\(])([A-J])[\.\)\*\s]*$")
_PAREN = re.compile(r"\(([A-J])\)")
# "it's B", "is (C)", "go with D": a weaker commitment, tried after the explicit markers.
_SOFT = re.compile(r"(?:\b(?:is|it's|go with|choose|pick|select)\s+)\(?([A-J])\)?(?=[\s\.,;:!)]|$)")
_BOXED_LETTER = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-J])\)?")


def mcq_options(prompt: str) -> dict[str, str]:
    """Option letter -> option text, when the prompt lays out at least two options."""
    p = clip(prompt)
    opts = {m.group(1): m.group(2).strip() for m in _OPT_LINE.finditer(p)}
    if len(opts) < 2:
        opts = {m.group(1): m.group(2).strip() for m in _OPT_INLINE.finditer(p)}
    letters = sorted(opts)
    # A real option list starts at A and has no holes; "I. Introduction" alone is not one.
    if len(letters) < 2 or letters[0] != "A" or ord(letters[-1]) - ord("A") + 1 != len(letters):
        return {}
    return opts


def extract_choice(answer: str, options: dict[str, str]) -> str | None:
    """The option letter an answer commits to, or None."""
    a = clip(answer).strip()
    if not a:
        return None
    valid = set(options) if options else set("ABCDEFGHIJ")
    m = _BOXED_LETTER.findall(a)
    if m and m[-1] in valid:
        return m[-1]
    hits = [h for h in _ANS_MARKERS.findall(a) if h in valid]
    if hits:
        return hits[-1]
    for m2 in (_LEADING.match(a), _TRAILING.search(a[-200:])):
        if m2 and m2.group(1) in valid:
            return m2.group(1)
    if options:   # the answer quotes an option's text instead of its letter
        na = normalize_text(a)
        found = [k for k, v in options.items() if (nv := normalize_text(v)) and
                 (na == nv or ((len(nv) > 1 or nv.isdigit()) and re.search(r"\b" + re.escape(nv) + r"\b", na)))]
        if len(found) == 1:
            return found[0]
    parens = [p for p in _PAREN.findall(a) if p in valid]
    if parens:
        return parens[-1]
    soft = [p for p in _SOFT.findall(a[:2000]) if p in valid]
    return soft[0] if soft else None


# ---------------------------------------------------------------- numbers
_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+"
_NUM_RE = re.compile(_NUM)
_FINAL_MARKERS = [
    re.compile(r"####\s*(.+)"),
    re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*[:\s]*(.{1,80})", re.I),
]


def _boxed(text: str) -> list[str]:
    out, i = [], 0
    while True:
        i = text.find("\\boxed", i)
        if i < 0:
            return out
        j = text.find("{", i)
        if j < 0:
            return out
        depth, k = 0, j
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        out.append(text[j + 1:k])
        i = k


def _latex_clean(s: str) -> str:
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|quad)", "", s)
    s = re.sub(r"\\text\{([^}]*)\}|\\mbox\{([^}]*)\}|\\mathrm\{([^}]*)\}", lambda m: next(g for g in m.groups() if g is not None), s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = s.replace("\\%", "%").replace("\\$", "$").replace("$", "")
    return s.strip()


def to_number(s: str) -> Fraction | None:
    """A numeric value for a short answer string ("1,234", "$5.50", "3/4", "\\frac{3}{4}", "-2")."""
    s = _latex_clean(s)
    m = re.fullmatch(r"\s*(-?)\\frac\{?(-?\d+)\}?\{?(\d+)\}?\s*", s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        return None if den == 0 else Fraction(num * (-1 if m.group(1) else 1), den)
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"\s*(%|percent|dollars?|cents?|units?|[a-zA-Z]+\.?)$", "", s).strip()
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)", s)
    try:
        if m:
            den = Fraction(m.group(2))
            return None if den == 0 else Fraction(m.group(1)) / den
        if re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


_BOLD_NUM = re.compile(r"\*\*[^*\n]{0,40}?(-?\$?\d[\d,]*(?:\.\d+)?)[^*\n]{0,40}\*\*")
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")
_CONCLUDE = re.compile(r"\b(therefore|thus|hence|so|in total|altogether|overall|finally|in conclusion)\b", re.I)


def extract_final(answer: str) -> tuple[str | None, bool]:
    """(final answer string, explicitly marked?) for math-style answers.

    Marked: \\boxed{}, ``####``, "the answer is". Otherwise the last number in the text.
    """
    a = clip(answer)
    boxed = _boxed(a)
    if boxed:
        return _latex_clean(boxed[-1]), True
    for rx in _FINAL_MARKERS:
        hits = rx.findall(a)
        if hits:
            tail = hits[-1].strip()
            nums = _NUM_RE.findall(tail)
            frac = re.search(r"\\frac\{?-?\d+\}?\{?\d+\}?", tail)
            if frac:
                return frac.group(0), True
            if nums:
                return nums[0].replace("$", "").strip(), True
            cleaned = _latex_clean(tail.split("\n")[0]).rstrip(".").strip()
            if cleaned:
                return cleaned, True
    # Unmarked: a bolded number, else the last number of the last concluding sentence
    # ("Therefore, she makes $18 a day."), else the last number at all. A trailing note
    # ("Note: the 4 muffins ...") should not win over the conclusion.
    bold = _BOLD_NUM.findall(a)
    if bold:
        return bold[-1].replace("$", "").strip(), False
    concl = [seg for seg in _SENTENCES.split(a) if _CONCLUDE.search(seg) and _NUM_RE.search(seg)]
    if concl:
        return _NUM_RE.findall(concl[-1])[-1].replace("$", "").strip(), False
    nums = _NUM_RE.findall(a)
    if nums:
        return nums[-1].replace("$", "").strip(), False
    return None, False


def same_final(x: str, y: str) -> bool:
    nx, ny = to_number(x), to_number(y)
    if nx is not None and ny is not None:
        if nx == ny:
            return True
        scale = max(abs(nx), abs(ny), Fraction(1))
        return abs(nx - ny) / scale < Fraction(1, 10**4)   # 0.3333 vs 1/3
    return _canon_expr(x) == _canon_expr(y)


def _canon_expr(s: str) -> str:
    s = _latex_clean(s).lower()
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\\(frac|sqrt)(\w)(\w)?", lambda m: f"\\{m.group(1)}{{{m.group(2)}}}" +
               (f"{{{m.group(3)}}}" if m.group(3) else ""), s)     # \frac12 -> \frac{1}{2}, \sqrt3 -> \sqrt{3}
    s = re.sub(r"^[a-z]\s*=", "", s)          # "x=5" vs "5"
    return s.rstrip(".")


# ---------------------------------------------------------------- text
def normalize_text(s: str) -> str:
    s = s.lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


_STOP = frozenset(
    "i me my we our you your he him his she her it its they them their what which who whom this that these "
    "those am is are was were be been being have has had do does did a an the and but if or because as until "
    "while of at by for with about against between into through during before after above below to from up "
    "down in out on off over under again further then once here there when where why how all any both each "
    "few more most other some such no nor not only own same so than too very s t can will just don should "
    "now answer correct question would could also known called named".split())


def content_tokens(s: str, drop: frozenset[str] = frozenset()) -> list[str]:
    return [t for t in normalize_text(s).split() if t not in _STOP and t not in drop]


def token_f1(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    from collections import Counter
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    p, r = common / len(a), common / len(b)
    return 2 * p * r / (p + r)


# ---------------------------------------------------------------- JSON
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(clip(text))]


def extract_json(answer: str) -> tuple[bool, Any]:
    """(parsed?, value): the whole answer, a fenced block, or the first balanced {...}/[...]."""
    a = clip(answer).strip()
    cands = [a] + [b for _, b in fenced_blocks(a)]
    for start_ch, end_ch in (("{", "}"), ("[", "]")):
        i, j = a.find(start_ch), a.rfind(end_ch)
        if 0 <= i < j:
            cands.append(a[i:j + 1])
    for c in cands:
        try:
            return True, json.loads(c)
        except (ValueError, RecursionError):
            continue
    return False, None


def canonical_json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_leaves(v: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(v, dict):
        out: dict[str, str] = {}
        for k, x in v.items():
            out.update(json_leaves(x, f"{prefix}/{k}"))
        return out or {prefix: "{}"}
    if isinstance(v, list):
        out = {}
        for i, x in enumerate(v):
            out.update(json_leaves(x, f"{prefix}/{i}"))
        return out or {prefix: "[]"}
    if isinstance(v, str):
        return {prefix: normalize_text(v)}
    return {prefix: json.dumps(v)}


def json_similarity(x: Any, y: Any) -> float:
    """Share of leaf paths with equal values (Jaccard over path=value pairs)."""
    lx, ly = set(json_leaves(x).items()), set(json_leaves(y).items())
    if not lx and not ly:
        return 1.0
    return len(lx & ly) / len(lx | ly)


def schema_errors(value: Any, schema: Any, path: str = "$", depth: int = 0) -> list[str]:
    """A small JSON-schema subset (type, required, properties, items, enum): enough to tell
    an answer that ignores the requested shape from one that follows it."""
    if not isinstance(schema, dict) or depth > 20:
        return []
    errs: list[str] = []
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if isinstance(t, str):
        if t in ("number", "integer"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and t == "integer":
                ok = float(value).is_integer()
        else:
            ok = isinstance(value, types.get(t, object))
        if not ok:
            return [f"{path}: expected {t}"]
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        errs.append(f"{path}: not in enum")
    if isinstance(value, dict):
        for k in schema.get("required", []) or []:
            if k not in value:
                errs.append(f"{path}: missing {k}")
        props = schema.get("properties") or {}
        if isinstance(props, dict):
            for k, sub in props.items():
                if k in value:
                    errs.extend(schema_errors(value[k], sub, f"{path}.{k}", depth + 1))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, x in enumerate(value[:200]):
            errs.extend(schema_errors(x, schema["items"], f"{path}[{i}]", depth + 1))
    return errs
