"""Per-question difficulty: cheap models fail on hard questions, and show it.

Enabled by ``MockSettings.difficulty`` (off by default; the older ``disagreement``
model applies otherwise). Everything is a pure function of (model, question, sample):

Difficulty and skill
    difficulty d = blake2b("difficulty", question) as a fraction in [0, 1).
    skill s: ``MockSettings.model_skill[model]``, else by name: names containing
    small/mini/fast/cheap/haiku/flash/nano 0.45; large/strong/pro/opus/reason/o1/o3/o4/r1/gpt-4o 0.9;
    others 0.7.
    The correct answer is X = blake2b(question) % 100 (the same X as without difficulty).

Answers
    d < s (easy for this model): "Answer: X" for every sample.
    d >= s (too hard): "Answer: W" with W = X + 1 + blake2b(model, question, sample) % 3,
    so samples of a hard question disagree with each other most of the time and never
    hit X. The sample key is ``seed`` and ``temperature`` from the request ("" when
    neither is set, so a plain request is as deterministic as before).

Logprobs (when the request asks ``logprobs: true``)
    One entry per content piece (the pieces the stream sends). The answer number's token
    carries the signal: margin m = s - d;
      right: -0.02 - 0.68 * max(0, 1 - m / 0.25)   (confident far from the edge, down to -0.7)
      wrong: -0.6 - 1.2 * min(1, -m / 0.25)          (-0.6 near the edge, -1.8 when far out)
    so low confidence overlaps a little at the edge, as in real models. "Answer" and ":"
    get -0.001, filler tokens -0.05.

Verification
    A request whose last user message starts with ``VERIFY_PREFIX`` ("Proposed answer:")
    asks whether that proposed answer to the previous user message is correct. The
    verifier replies "YES" or "NO"; it judges correctly when d < s_verifier + 0.15
    (checking is easier than solving), otherwise it answers "YES".

The control API exposes this: ``POST /_mock/truth {"model", "messages" | "question",
"seed"?, "temperature"?}`` -> {question, correct_answer, difficulty, skill, correct, answer}.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from simulator.model import _h64, text_of

VERIFY_PREFIX = "Proposed answer:"
_WEAK = ("small", "mini", "fast", "cheap", "haiku", "flash", "nano")
_STRONG = ("large", "strong", "pro", "opus", "reason", "o1", "o3", "o4", "r1", "gpt-4o")
_ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)")


def difficulty(question: str) -> float:
    return _h64("difficulty", question) / 2 ** 64


def skill_for(model: str, skills: Mapping[str, float] | None = None) -> float:
    if skills and model in skills:
        return float(skills[model])
    m = model.lower()
    if any(k in m for k in _WEAK):
        return 0.45
    if any(k in m for k in _STRONG):
        return 0.9
    return 0.7


def sample_key(body: Mapping[str, Any]) -> str:
    seed, temp = body.get("seed"), body.get("temperature")
    if seed is None and not temp:
        return ""
    return f"{seed}|{temp}"


@dataclass(frozen=True)
class Truth:
    question: str
    correct_answer: int
    difficulty: float
    skill: float
    correct: bool
    answer: int
    answer_logprob: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(model: str, question: str, skills: Mapping[str, float] | None = None, sample: str = "") -> Truth:
    x = _h64(question) % 100
    d, s = difficulty(question), skill_for(model, skills)
    margin = s - d
    if margin > 0:
        given = x
        lp = -0.02 - 0.68 * max(0.0, 1 - margin / 0.25)
    else:
        given = (x + 1 + _h64(model, question, sample) % 3) % 100
        lp = -0.6 - 1.2 * min(1.0, -margin / 0.25)
    return Truth(question=question, correct_answer=x, difficulty=round(d, 6), skill=s, correct=margin > 0,
                 answer=given, answer_logprob=round(lp, 4))


def user_texts(messages: list[Any]) -> list[str]:
    return [text_of(m.get("content"))[0] for m in messages if isinstance(m, dict) and m.get("role") == "user"]


def verification(model: str, messages: list[Any], skills: Mapping[str, float] | None) -> str | None:
    """'YES'/'NO' when the last user message is a verification request, else None."""
    users = user_texts(messages)
    if len(users) < 2 or not users[-1].startswith(VERIFY_PREFIX):
        return None
    question = users[-2]
    m = _ANSWER_RE.search(users[-1]) or re.search(r"(-?\d+)", users[-1][len(VERIFY_PREFIX):])
    proposed = int(m.group(1)) if m else None
    d, s = difficulty(question), skill_for(model, skills)
    if d < s + 0.15:
        return "YES" if proposed == _h64(question) % 100 else "NO"
    return "YES"


def pieces_and_logprobs(model: str, messages: list[Any], body: Mapping[str, Any], visible: int,
                        skills: Mapping[str, float] | None, question: str) -> tuple[list[str], list[float]]:
    """The visible content as per-token pieces, and one logprob per piece."""
    if visible <= 0:
        return [], []
    verdict = verification(model, messages, skills)
    if verdict is not None:
        return [verdict][:visible], [-0.01]
    t = judge(model, question, skills, sample_key(body))
    pieces = ["Answer", ":", f" {t.answer}"]
    lps = [-0.001, -0.001, t.answer_logprob]
    if visible <= 3:
        return pieces[:visible], lps[:visible]
    fill = [" lorem", " ipsum", " dolor", " sit", " amet"]
    pieces.append("\n" + fill[0][1:])
    pieces.extend(fill[i % 5] for i in range(1, visible - 3))
    lps.extend([-0.05] * (len(pieces) - 3))
    return pieces, lps


def logprobs_content(pieces: list[str], lps: list[float]) -> list[dict[str, Any]]:
    """OpenAI `choices[].logprobs.content` entries."""
    return [{"token": p, "logprob": lp, "bytes": list(p.encode()), "top_logprobs": []} for p, lp in zip(pieces, lps)]
