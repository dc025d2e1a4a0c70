"""Deliberation text: the prompts agents and the aggregator see, and how answers are counted as votes."""

from __future__ import annotations

import re
from typing import Any

import orjson

DEBATE_INSTRUCTION = (
    "Above are all agents' answers from the previous round, yours among them. Check them for errors, "
    "then give your own best answer. End with a line 'Answer: <final answer>'."
)
SYNTH_INSTRUCTION = (
    "Above are several agents' answers to the user's last message. Write the single best final answer "
    "for the user, correcting any errors. Reply with only that answer, addressed to the user."
)
PICK_INSTRUCTION = "Above are {n} candidate answers. Reply with only the number (1-{n}) of the best one."

# Diversity: agent 1 answers exactly as the client asked; every other agent gets its own seed
# (the client's + i), a temperature spread above the client's (not for native reasoning models,
# which reject one) and a perspective message after the shared prefix.
PERSPECTIVES = (
    "You are one of several independent solvers. Solve the task your own way, then check the result by a "
    "different method (work backwards or test an example) before you answer.",
    "You are one of several independent solvers. Be skeptical: find the most likely mistake in the obvious "
    "answer and make sure yours avoids it.",
    "You are one of several independent solvers. Reason from first principles and state the key assumption "
    "your answer rests on.",
)
TEMPERATURE_FLOOR = 0.5     # agents after the first sample at least this warm...
TEMPERATURE_STEP = 0.2      # ...plus this per agent...
TEMPERATURE_CAP = 1.0       # ...up to this

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


def calls_key(calls: list[Any]) -> str:
    """What two tool-call answers must share to count as the same vote: the set of
    (name, arguments as canonical JSON). Unparseable arguments compare as their text."""
    items = []
    for c in calls:
        fn = (c or {}).get("function") or {}
        args = fn.get("arguments") or ""
        try:
            args = orjson.dumps(orjson.loads(args), option=orjson.OPT_SORT_KEYS).decode()
        except (orjson.JSONDecodeError, TypeError):
            pass
        items.append(f"{fn.get('name')}({args})")
    return "tools:" + "|".join(sorted(items))


def message_key(message: dict[str, Any]) -> str:
    """The vote a message casts: its tool-call set when it has one, else its final answer line."""
    calls = message.get("tool_calls")
    if calls:
        return calls_key(calls)
    c = message.get("content")
    return answer_key(c if isinstance(c, str) else "")


def message_text(message: dict[str, Any]) -> str:
    """How an answer is quoted to other agents and the aggregator: its text, or its tool calls."""
    calls = message.get("tool_calls")
    if calls:
        return "Tool calls: " + "; ".join(
            f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments')})" for c in calls)
    c = message.get("content")
    return c if isinstance(c, str) else ""


def tally(answers: list[str], keys: list[str] | None = None) -> tuple[int, int]:
    """(index of the plurality answer, its vote count); ties go to the earliest agent.
    `keys`, when given, are the votes (see `message_key`); else each answer's final line is."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        k = keys[i] if keys is not None else answer_key(a)
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, i)
    best = max(counts, key=lambda k: (counts[k], -first[k]))
    return first[best], counts[best]


def agent_variation(i: int, body: dict[str, Any], native: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(body overrides, messages appended after the shared prefix) for agent i (0-based)."""
    if i == 0:
        return {}, []
    seed = body.get("seed")
    params: dict[str, Any] = {"seed": (seed if isinstance(seed, int) and not isinstance(seed, bool) else 0) + i}
    if not native:
        t = body.get("temperature")
        base = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.0
        params["temperature"] = round(min(TEMPERATURE_CAP, max(base, TEMPERATURE_FLOOR) + TEMPERATURE_STEP * i), 2)
    return params, [{"role": "system", "content": PERSPECTIVES[(i - 1) % len(PERSPECTIVES)]}]


def agreement(answers: list[str], keys: list[str] | None = None) -> float:
    """Share of answers that match the plurality final answer (1.0 = unanimous)."""
    if not answers:
        return 0.0
    return tally(answers, keys)[1] / len(answers)
