"""The cascade's answer check: should the cheap answer be escalated? Pure, no I/O.

`check(request, answers, logprobs)` takes the request (a prompt string or chat messages),
the answers (the cheap answer first, then other samples or a second model's answer; each a
string or an OpenAI message dict with `content`/`tool_calls`) and optionally one list of
token logprobs per answer. It returns `escalate` in (0, 1), higher = escalate, and the
signals behind it.

Answers are compared by meaning for their kind (see `answer_extract`, `answer_code`):
``mcq`` the option letter, ``numeric`` the final number/expression, ``code`` normalised
syntax trees, ``json`` canonical JSON, ``tool`` tool name + arguments, ``text`` content
tokens not already in the prompt.

The score is one logistic formula with hand-set weights (documented in
docs/cascade.md), chosen from what the cascade literature
(FrugalGPT, AutoMix, self-consistency) and our synthetic harness agree on:

    z = BIAS[kind]
      + DISAGREE[kind] * (1 - agreement)       # other answers say something else
      + 2.0 * no_payload                       # no letter / number / code / JSON found
      + 2.5 * invalid                          # JSON/schema/tool args/code do not parse
      + 1.5 * refusal + 0.6 * min(hedges, 3)
      + 2.0 * min(-mean_logprob, 2.5) + 0.12 * min(-min_logprob, 10)   # when logprobs given
      + 1.5 * min(-answer_logprob, 4)          # tokens given: the tokens spelling the answer
      + 3.0 * (1 - tests_passed)               # code run on the prompt's asserts (offline runner only)
      + 0.15 * ln(1 + answer_words)            # longer answers ~ harder questions
    escalate = 1 / (1 + exp(-z))

Weights were not fitted to any held-out set; `classifier/training/cascade_eval.py`
measures the result on synthetic cases of every kind.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from classifier.answer_code import (
    analyse_code,
    code_similarity,
    definitions_only,
    looks_like_code_request,
    probes,
    required_functions,
    runnable_code,
)
from classifier.answer_extract import (
    canonical_json,
    clip,
    content_tokens,
    extract_choice,
    extract_final,
    extract_json,
    json_similarity,
    mcq_options,
    normalize_text,
    same_final,
    schema_errors,
    to_number,
    token_f1,
    trim_continuation,
)
from classifier.features import last_user_text

KINDS = ("mcq", "numeric", "code", "json", "tool", "text")
BIAS = {"mcq": -2.0, "numeric": -2.6, "code": -2.0, "json": -2.4, "tool": -2.4, "text": -2.2}
DISAGREE = {"mcq": 3.2, "numeric": 3.8, "code": 2.6, "json": 2.6, "tool": 3.0, "text": 2.6}
W_NO_PAYLOAD, W_INVALID, W_REFUSAL, W_HEDGE = 2.0, 2.5, 1.5, 0.6
W_MEAN_LP, W_MIN_LP, W_ANSWER_LP, W_LEN = 2.0, 0.12, 1.5, 0.15
W_TESTS = 3.0               # share of the prompt's own tests the cheap code fails (only with a runner)
# A runner executes code on probe calls: (code, probes) -> one {"out", "ok"} per probe, or None.
Runner = Callable[[str, list[dict[str, str]]], "list[dict[str, Any]] | None"]
LONG_TEXT_WORDS = 60        # beyond this, free-text answers legitimately differ

_HEDGE = re.compile(
    r"\b(not (?:entirely |completely |100% )?(?:sure|certain)|unsure|i think|i believe|probably|possibly|"
    r"perhaps|might be|may be|it depends|unclear|cannot be determined|can't be determined|"
    r"not enough information|insufficient information|my best guess|i guess|hard to say|"
    r"i'm not able to determine|ambiguous)\b", re.I)
_REFUSAL = re.compile(
    r"\b(i (?:can(?:'|no)?t|am unable to|'m unable to|won't) (?:help|assist|answer|provide|comply|do that)|"
    r"as an ai(?: language model)?|i'm sorry,? but i|i apologi[sz]e,? but)\b", re.I)


@dataclass
class CheckResult:
    escalate: float
    kind: str
    signals: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"escalate": self.escalate, "kind": self.kind, "signals": self.signals}


def answer_text(a: Any) -> str:
    if isinstance(a, str):
        return a
    if isinstance(a, Mapping):
        c = a.get("content")
        if isinstance(c, str):
            return c
        if isinstance(c, list):
            return "".join(p.get("text", "") for p in c if isinstance(p, Mapping) and isinstance(p.get("text"), str))
        return ""
    return "" if a is None else str(a)


def _tool_calls(a: Any) -> list[Mapping[str, Any]]:
    if isinstance(a, Mapping) and isinstance(a.get("tool_calls"), list):
        return [t for t in a["tool_calls"] if isinstance(t, Mapping)]
    return []


def _schema(response_format: Any) -> tuple[bool, Any]:
    """(JSON required?, schema or None) from an OpenAI `response_format`."""
    if not isinstance(response_format, Mapping):
        return False, None
    t = response_format.get("type")
    if t == "json_object":
        return True, None
    if t == "json_schema":
        js = response_format.get("json_schema")
        return True, js.get("schema") if isinstance(js, Mapping) else None
    return False, None


def detect_kind(prompt: str, answers: Sequence[Any], response_format: Any = None, tools: Any = None) -> str:
    if tools and any(_tool_calls(a) for a in answers[:1]):
        return "tool"
    if _schema(response_format)[0]:
        return "json"
    first = trim_continuation(answer_text(answers[0])) if answers else ""
    # A multiple-choice question about code ("What does this function return? A. ... B. ...")
    # is answered with a letter, not with code.
    if mcq_options(prompt) and not re.search(r"```|^\s*def\s", first, re.M):
        return "mcq"
    if looks_like_code_request(prompt) or re.search(r"```(?:python|py)\b", first):
        return "code"
    texts = [answer_text(a).strip() for a in answers]
    if texts and sum(bool(re.fullmatch(r"\(?[A-J][\.\)]?", t)) for t in texts) * 2 > len(texts):
        return "mcq"
    if re.search(r"\bjson\b", prompt, re.I) and extract_json(first)[0] and first.lstrip()[:1] in "{[`":
        return "json"
    final, marked = extract_final(first)
    if final is None:
        return "text"
    if "\\boxed" in prompt or "\\boxed" in first or "####" in first:
        return "numeric"
    is_num = to_number(final) is not None
    if is_num and (marked or _mathy(prompt)):
        return "numeric"
    if marked and _mathy(prompt) and re.search(r"\d|\\", final):
        return "numeric"
    return "text"


def _mathy(prompt: str) -> bool:
    p = prompt.lower()
    return bool(re.search(r"how (many|much)|calculate|compute|solve|what is \d|\d\s*[-+*/^]\s*\d|\$|percent|"
                          r"total|sum|product|average|remainder|probability|evaluate|simplify", p))


def _compare(kind: str, prompt: str, answers: Sequence[Any], response_format: Any, tools: Any,
             run_code: Runner | None = None) -> tuple[bool, list[float | None], bool, dict[str, Any]]:
    """(payload found in the cheap answer, similarity to each other answer (None = unknown),
    structurally valid, extra signals)."""
    texts = [trim_continuation(answer_text(a)) for a in answers]
    extra: dict[str, Any] = {}
    if kind == "mcq":
        opts = mcq_options(prompt)
        picks = [extract_choice(t, opts) for t in texts]
        extra["choices"] = picks
        sims = [None if p is None or picks[0] is None else float(p == picks[0]) for p in picks[1:]]
        return picks[0] is not None, sims, True, extra
    if kind == "numeric":
        finals = [extract_final(t) for t in texts]
        extra["finals"] = [f for f, _ in finals]
        extra["marked"] = finals[0][1]
        f0 = finals[0][0]
        sims = [None if f is None or f0 is None else float(same_final(f0, f)) for f, _ in finals[1:]]
        return f0 is not None, sims, True, extra
    if kind == "code":
        keep = required_functions(prompt)
        infos = [analyse_code(t, keep, prompt) for t in texts]
        c0 = infos[0]
        missing = bool(keep) and c0.parses and not (keep & set(c0.defined))
        extra.update(parses=c0.parses, missing_function=missing)
        sims: list[float | None] = [None if not i.found else code_similarity(c0, i) for i in infos[1:]]
        calls = probes(prompt) if run_code is not None and c0.parses else []
        if calls:
            runs = [_run(run_code, t, prompt, calls) if i.parses else None for t, i in zip(texts, infos)]
            r0 = runs[0]
            if r0 is not None:
                tested = [r["ok"] for r in r0 if r.get("ok") is not None]
                if tested:
                    extra["tests_passed"] = round(sum(bool(x) for x in tested) / len(tested), 4)
                extra["ran"] = True
                # the same outputs on the prompt's inputs = the same program, as far as the prompt can tell
                sims = [s if r is None else sum(a.get("out") == b.get("out") for a, b in zip(r0, r)) / len(r0)
                        for s, r in zip(sims, runs[1:])]
        return c0.found, sims, c0.parses and not missing, extra
    if kind == "json":
        need, schema = _schema(response_format)
        parsed = [extract_json(t) for t in texts]
        ok0, v0 = parsed[0]
        errs = schema_errors(v0, schema) if ok0 and schema is not None else []
        extra.update(json_valid=ok0, schema_errors=errs[:5])
        if ok0:
            extra["canonical"] = canonical_json(v0)[:200]
        sims = [None if not ok or not ok0 else json_similarity(v0, v) for ok, v in parsed[1:]]
        return ok0, sims, ok0 and not errs, extra
    if kind == "tool":
        calls = [_tool_calls(a) for a in answers]
        valid, sig0 = _tool_validity(calls[0], tools)
        extra["tool_args_valid"] = valid
        sims = []
        for c in calls[1:]:
            _, sig = _tool_validity(c, tools)
            sims.append(None if not c else _tool_similarity(sig0, sig))
        return bool(calls[0]), sims, valid, extra
    # free text: compare what the answers add beyond the prompt's own words
    drop = frozenset(content_tokens(prompt[:4000]))
    toks = [content_tokens(t, drop) or content_tokens(t) for t in texts]
    sims = []
    pol0 = _polarity(texts[0])
    for t, tok in zip(texts[1:], toks[1:]):
        pol = _polarity(t)
        if pol0 is not None and pol is not None:
            sims.append(float(pol == pol0))     # yes/no, true/false: the verdict is the answer
            continue
        if not tok or not toks[0]:
            sims.append(float(normalize_text(t) == normalize_text(texts[0])) if t.strip() else None)
            continue
        f1 = token_f1(toks[0], tok)
        small, big = sorted((set(toks[0]), set(tok)), key=len)
        contained = len(small & big) / len(small)
        sims.append(max(f1, contained if len(small) <= 6 else f1))
    return bool(texts[0].strip()), sims, True, extra


def _run(run_code: Runner, text: str, prompt: str, calls: list[dict[str, str]]) -> list[dict[str, Any]] | None:
    code, tree = runnable_code(text, prompt)
    if code is None or tree is None:
        return None
    try:
        res = run_code(definitions_only(tree), calls)
    except Exception:  # noqa: BLE001 - a runner failure only means no execution signal
        return None
    return res if isinstance(res, list) and len(res) == len(calls) else None


_POLARITY = re.compile(r"^\W*(yes|no|true|false|correct|incorrect)\b", re.I)
_POS = {"yes", "true", "correct"}


def _polarity(text: str) -> bool | None:
    m = _POLARITY.match(text[:200])
    return None if m is None else m.group(1).lower() in _POS


def _tool_validity(calls: list[Mapping[str, Any]], tools: Any) -> tuple[bool, list[tuple[str, Any]]]:
    specs: dict[str, Any] = {}
    for t in tools or []:
        fn = t.get("function") if isinstance(t, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            specs[fn["name"]] = fn.get("parameters")
    ok, sig = bool(calls), []
    for c in calls:
        fn = c.get("function") if isinstance(c.get("function"), Mapping) else {}
        name, raw = fn.get("name"), fn.get("arguments")
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = None
        if not isinstance(args, dict) or (specs and name not in specs):
            ok = False
        elif specs and schema_errors(args, specs.get(name)):
            ok = False
        sig.append((str(name), args))
    return ok, sig


def _tool_similarity(a: list[tuple[str, Any]], b: list[tuple[str, Any]]) -> float:
    if not a or not b:
        return 0.0
    if [n for n, _ in a] != [n for n, _ in b]:
        return 0.0
    return sum(json_similarity(x, y) if x is not None and y is not None else 0.0
               for (_, x), (_, y) in zip(a, b)) / len(a)


def _logprob_entries(lps: Any) -> tuple[list[float], list[str] | None]:
    """Token logprobs as numbers, or OpenAI `logprobs.content` entries ({token, logprob})."""
    if not isinstance(lps, (list, tuple)):
        return [], None
    vals: list[float] = []
    toks: list[str] | None = []
    for v in lps:
        if isinstance(v, Mapping):
            lp, tok = v.get("logprob"), v.get("token")
            if toks is not None and isinstance(tok, str):
                toks.append(tok)
            else:
                toks = None
        else:
            lp, toks = v, None
        if isinstance(lp, (int, float)) and not isinstance(lp, bool) and math.isfinite(lp):
            vals.append(float(lp))
        else:
            toks = None           # positions no longer line up with the text
    return vals, toks if toks else None


def _span_logprob(tokens: list[str], values: list[float], payload: str | None) -> float | None:
    """Lowest logprob among the tokens that spell the extracted answer (its last occurrence)."""
    if not payload or len(tokens) != len(values):
        return None
    joined = "".join(tokens)
    i = joined.rfind(payload)
    if i < 0:
        return None
    j, pos, span = i + len(payload), 0, []
    for tok, v in zip(tokens, values):
        start, pos = pos, pos + len(tok)
        if pos > i and start < j:
            span.append(v)
    return min(span) if span else None


def check(request: str | Sequence[Mapping[str, Any]], answers: Sequence[Any],
          logprobs: Sequence[Any] | None = None, *, response_format: Any = None, tools: Any = None,
          run_code: Runner | None = None) -> CheckResult:
    """Score the first answer; see the module docstring for the formula.

    `run_code` (optional, offline): executes code answers on calls derived from the prompt
    (classifier/training/code_runner.py); this module itself never runs anything."""
    if not answers:
        raise ValueError("answers must hold at least the cheap answer")
    prompt = clip(request if isinstance(request, str) else last_user_text(request))
    kind = detect_kind(prompt, answers, response_format, tools)
    found, sims, valid, extra = _compare(kind, prompt, answers, response_format, tools, run_code)
    text0 = clip(answer_text(answers[0]))
    known = [s for s in sims if s is not None]
    agreement = sum(known) / len(known) if known else None
    words = len(text0.split())
    hedges = len(_HEDGE.findall(text0[:4000]))
    refusal = bool(_REFUSAL.search(text0[:2000]))
    lp_vals, lp_toks = _logprob_entries(logprobs[0] if logprobs else None)
    mean_lp = sum(lp_vals) / len(lp_vals) if lp_vals else None
    min_lp = min(lp_vals) if lp_vals else None
    payload = (extra.get("choices") or extra.get("finals") or [None])[0]
    answer_lp = _span_logprob(lp_toks, lp_vals, payload) if lp_toks else None

    w_dis = DISAGREE[kind]
    if kind == "text" and words > LONG_TEXT_WORDS:
        w_dis *= 0.4
    z = BIAS[kind]
    if agreement is not None:
        z += w_dis * (1.0 - agreement)
    elif len(answers) > 1 and found:
        z += w_dis * 0.5          # the others have no comparable payload: half a doubt
    z += W_NO_PAYLOAD * (not found) + W_INVALID * (found and not valid)
    z += W_REFUSAL * refusal + W_HEDGE * min(hedges, 3)
    if mean_lp is not None:
        z += W_MEAN_LP * min(-mean_lp, 2.5) + W_MIN_LP * min(-(min_lp or 0.0), 10.0)
    if answer_lp is not None:
        z += W_ANSWER_LP * min(-answer_lp, 4.0)
    if extra.get("tests_passed") is not None:
        z += W_TESTS * (1.0 - extra["tests_passed"])
    z += W_LEN * math.log1p(words)
    escalate = 1.0 / (1.0 + math.exp(-z))
    signals: dict[str, Any] = {
        "n_answers": len(answers), "found": found, "valid": valid,
        "agreement": None if agreement is None else round(agreement, 4),
        "agree_votes": sum(s >= 0.999 for s in known), "compared": len(known),
        "hedges": hedges, "refusal": refusal, "answer_words": words,
        "mean_logprob": None if mean_lp is None else round(mean_lp, 4),
        "min_logprob": None if min_lp is None else round(min_lp, 4),
        "answer_logprob": None if answer_lp is None else round(answer_lp, 4),
        **extra,
    }
    return CheckResult(escalate=round(escalate, 6), kind=kind, signals=signals)


def reasons(result: CheckResult, threshold: float) -> list[str]:
    """Short human-readable reasons for an escalation (for the ledger and headers)."""
    s = result.signals
    out: list[str] = []
    if not s.get("found"):
        out.append("no_answer_found")
    if s.get("found") and not s.get("valid"):
        out.append("invalid_structure")
    if s.get("agreement") is not None and s["agreement"] < 0.5:
        out.append("disagreement")
    if (s.get("mean_logprob") is not None and s["mean_logprob"] < -0.5) or \
            (s.get("answer_logprob") is not None and s["answer_logprob"] < -0.5):
        out.append("low_logprob")
    if s.get("refusal"):
        out.append("refusal")
    if s.get("hedges"):
        out.append("hedging")
    if result.escalate >= threshold and not out:
        out.append("score")
    return out
