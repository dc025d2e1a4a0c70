"""Deliberation text: the prompts agents and the aggregator see, and how answers are counted as votes."""

from __future__ import annotations

import re

DEBATE_INSTRUCTION = (
    "Above are all agents' answers from the previous round, yours among them. Check them for errors, "
    "then give your own best answer. End with a line 'Answer: <final answer>'."
)
SYNTH_INSTRUCTION = (
    "Above are several agents' answers to the user's last message. Write the single best final answer "
    "for the user, correcting any errors. Reply with only that answer, addressed to the user."
)
PICK_INSTRUCTION = "Above are {n} candidate answers. Reply with only the number (1-{n}) of the best one."

_ANSWER_LINE = re.compile(r"(?im)^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$")
_WS = re.compile(r"\s+")
_INT = re.compile(r"\d+")


def answers_block(answers: list[str]) -> str:
    parts = [f"Answers from {len(answers)} independent agents:"]
    parts += [f"[Agent {i}]\n{a}" for i, a in enumerate(answers, 1)]
    return "\n\n".join(parts)


def answer_key(text: str) -> str:
    """What two answers must share to count as the same vote: the final answer line, normalised."""
    found = _ANSWER_LINE.findall(text or "")
    if found:
        k = found[-1]
    else:
        lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
        k = lines[-1] if lines else ""
    return _WS.sub(" ", k.strip().strip("*$`").rstrip(".!;,").lower())


def tally(answers: list[str]) -> tuple[int, int]:
    """(index of the plurality answer, its vote count); ties go to the earliest agent."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        k = answer_key(a)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, i)
    best = max(counts, key=lambda k: (counts[k], -first[k]))
    return first[best], counts[best]
