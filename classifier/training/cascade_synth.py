"""Synthetic cascade cases: a prompt, two cheap answers, correctness labels, optional logprobs.

Each case draws a latent difficulty d in [0, 1]; both cheap models and the strong model
answer correctly with probabilities that fall with d (the strong one more slowly), so cheap
failures cluster on hard questions as they do in real routing data. Wrong answers are
correlated across the two cheap models (attractive distractors, common arithmetic slips, the
same wrong entity), so agreement is evidence, not proof. Answers come in the styles real
models use: bare letters, "The answer is (B)", bold, explanations that mention other
options, chains of thought ending in ``####`` or ``\\boxed{}``, fenced code with prose,
docstrings and demo prints, JSON in fences. Deterministic for a seed.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

_LET = "ABCD"


def _p(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _mcq(rng: random.Random, i: int, ok: list[bool], shared_wrong: bool) -> tuple[str, list[str]]:
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    vals = [a * b, a * b + rng.randint(1, 9), a * b - rng.randint(1, 9), a + b]
    rng.shuffle(vals)
    correct = vals.index(a * b)
    prompt = f"Question {i}: what is {a} times {b}?\n" + "\n".join(f"{_LET[k]}. {v}" for k, v in enumerate(vals)) + "\nAnswer:"
    wrongs = [k for k in range(4) if k != correct]
    distractor = rng.choice(wrongs)
    answers = []
    for good in ok:
        k = correct if good else (distractor if shared_wrong else rng.choice(wrongs))
        L, T = _LET[k], vals[k]
        other = _LET[rng.choice([j for j in range(4) if j != k])]
        answers.append(rng.choice([
            f"{L}", f" {L}. {T}", f"The answer is ({L}).", f"**{L}**", f"{T}", f"({L}) {T}",
            f"The correct answer is {L}: {T}.\n\nOption {other} is incorrect because it does not match.",
            f"Let's compute: {a} x {b}. Option {other} looks close, but the answer is {L}.",
        ]))
    return prompt, answers


def _math(rng: random.Random, i: int, ok: list[bool], shared_wrong: bool) -> tuple[str, list[str]]:
    n, price, extra = rng.randint(3, 60), rng.randint(2, 90), rng.randint(10, 999)
    v = n * price + extra
    prompt = (f"Problem {i}: A shop sells {n} boxes at ${price} each and earns ${extra} in tips. "
              f"How much money does it make in total?")
    slip = rng.choice([n * price, v + price, v - extra * 2, n + price + extra])
    answers = []
    for good in ok:
        x = v if good else (slip if shared_wrong else v + rng.choice([-1, 1]) * rng.randint(1, 50))
        xs = f"{x:,}" if rng.random() < 0.5 else str(x)
        answers.append(rng.choice([
            f"{n} boxes x ${price} = ${n * price}. Adding ${extra} gives {xs}.\n#### {x}",
            f"First {n}*{price} = {n * price}; then plus {extra}. The answer is ${xs}.",
            f"Total = {n} \\times {price} + {extra} = \\boxed{{{x}}}",
            f"The shop makes {xs} dollars in total.",
            f"{xs}",
        ]))
    return prompt, answers


_CODE = {
    "sum_list": (["def sum_list(xs):\n    return sum(xs)",
                  "def sum_list(items):\n    \"\"\"Sum of a list.\"\"\"\n    total = 0\n    for x in items:\n        total += x  # add\n    return total",
                  "def sum_list(lst):\n    s = 0\n    for v in lst:\n        s = s + v\n    return s"],
                 ["def sum_list(xs):\n    total = 0\n    for x in xs[1:]:\n        total += x\n    return total",
                  "def sum_list(xs):\n    return max(xs)"],
                 "assert sum_list([1, 2, 3]) == 6"),
    "is_prime": (["def is_prime(n):\n    if n < 2:\n        return False\n    for d in range(2, int(n ** 0.5) + 1):\n        if n % d == 0:\n            return False\n    return True",
                  "def is_prime(num):\n    if num < 2:\n        return False\n    i = 2\n    while i * i <= num:\n        if num % i == 0:\n            return False\n        i += 1\n    return True"],
                 ["def is_prime(n):\n    for d in range(2, n):\n        if n % d == 0:\n            return False\n    return True",
                  "def is_prime(n):\n    return n % 2 == 1"],
                 "assert is_prime(7) == True"),
    "reverse_words": (["def reverse_words(s):\n    return ' '.join(s.split()[::-1])",
                       "def reverse_words(text):\n    words = text.split()\n    words.reverse()\n    return ' '.join(words)"],
                      ["def reverse_words(s):\n    return s[::-1]",
                       "def reverse_words(s):\n    return ' '.join(sorted(s.split()))"],
                      "assert reverse_words('python program') == 'program python'"),
    "count_vowels": (["def count_vowels(s):\n    return sum(1 for c in s.lower() if c in 'aeiou')",
                      "def count_vowels(text):\n    count = 0\n    for ch in text.lower():\n        if ch in 'aeiou':\n            count += 1\n    return count"],
                     ["def count_vowels(s):\n    return sum(1 for c in s if c in 'aeiou')",
                      "def count_vowels(s):\n    return len(set(s) & set('aeiou'))"],
                     "assert count_vowels('Hello') == 2"),
}


def _code(rng: random.Random, i: int, ok: list[bool], shared_wrong: bool) -> tuple[str, list[str]]:
    name = rng.choice(sorted(_CODE))
    good_v, bad_v, test = _CODE[name]
    prompt = f"Write a python function `{name}` for task {i}.\nYour code should pass these tests:\n{test}"
    shared_bad = rng.choice(bad_v)
    answers = []
    for good in ok:
        body = rng.choice(good_v) if good else (shared_bad if shared_wrong else rng.choice(bad_v))
        if not good and rng.random() < 0.15:
            body = body.replace("):", ")", 1)           # a syntax slip
        if rng.random() < 0.3:
            body += f"\n\nprint({name}([1, 2]))" if name == "sum_list" else f"\n\nprint({name}('x'))"
        answers.append(rng.choice([
            f"```python\n{body}\n```",
            f"Here is the function:\n\n```python\n{body}\n```\n\nIt runs in linear time.",
            f"{body}",
        ]))
    return prompt, answers


_PEOPLE = [("Ada Lopez", 36, "Lisbon"), ("Ben Okafor", 52, "Lagos"), ("Chen Wei", 29, "Taipei"),
           ("Dana Ruiz", 41, "Quito"), ("Eli Novak", 67, "Brno")]
SCHEMA = {"type": "object", "required": ["name", "age", "city"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}}}


def _json(rng: random.Random, i: int, ok: list[bool], shared_wrong: bool) -> tuple[str, list[str]]:
    name, age, city = rng.choice(_PEOPLE)
    prompt = f"Record {i}: {name}, aged {age}, lives in {city}. Extract name, age and city as JSON."
    mistake = rng.choice(["age", "city", "missing", "broken"])
    answers = []
    for good in ok:
        obj: dict[str, Any] = {"name": name, "age": age, "city": city}
        m = None if good else (mistake if shared_wrong else rng.choice(["age", "city", "missing", "broken"]))
        if m == "age":
            obj["age"] = age + rng.choice([-10, 1, 10])
        elif m == "city":
            obj["city"] = rng.choice([p[2] for p in _PEOPLE if p[2] != city])
        elif m == "missing":
            del obj["city"]
        text = json.dumps(obj, indent=rng.choice([None, 2]))
        if m == "broken":
            text = text[:-1] + ","
        answers.append(rng.choice([text, f"```json\n{text}\n```", f"Here is the JSON:\n{text}"]))
    return prompt, answers


_FACTS = [("Who wrote the novel Middlemarch?", "George Eliot", ["Charlotte Bronte", "Jane Austen"]),
          ("Which planet has the moon Titan?", "Saturn", ["Jupiter", "Neptune"]),
          ("Who sang I've Got to Be Me?", "Sammy Davis Jr.", ["Frank Sinatra", "Dean Martin"]),
          ("What is the capital of Australia?", "Canberra", ["Sydney", "Melbourne"]),
          ("Which element has the symbol W?", "Tungsten", ["Wolfram steel", "Vanadium"])]


def _text(rng: random.Random, i: int, ok: list[bool], shared_wrong: bool) -> tuple[str, list[str]]:
    q, right, wrong = rng.choice(_FACTS)
    common = rng.choice(wrong)
    answers = []
    for good in ok:
        e = right if good else (common if shared_wrong else rng.choice(wrong))
        answers.append(rng.choice([e, f"The answer is {e}.", f"{e}.", f"It is {e}, as far as I know.",
                                   f"**{e}** is the answer to that question."]))
    return f"{q} (item {i})", answers


GENERATORS = {"mcq": _mcq, "numeric": _math, "code": _code, "json": _json, "text": _text}
_HEDGES = ["I'm not sure, but ", "Probably: ", "I think "]


def synthetic_cases(n: int, seed: int = 0, logprob_share: float = 0.5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    kinds = sorted(GENERATORS)
    rows = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        d = rng.betavariate(0.7, 0.7)
        ok = [rng.random() < _p(4.0 - 8.0 * d) for _ in range(2)]
        strong = rng.random() < _p(4.5 - 4.0 * d)
        shared_wrong = rng.random() < 0.35
        prompt, answers = GENERATORS[kind](rng, i, ok, shared_wrong)
        for j, good in enumerate(ok):
            if kind in ("text", "mcq") and rng.random() < (0.12 if not good else 0.03):
                answers[j] = rng.choice(_HEDGES) + answers[j]
        row: dict[str, Any] = {"prompt": prompt, "answers": answers, "kind": kind,
                               "labels": {"cheap": float(ok[0]), "strong": float(strong)}}
        if kind == "json":
            row["response_format"] = {"type": "json_schema", "json_schema": {"name": "rec", "schema": SCHEMA}}
        if rng.random() < logprob_share:
            row["logprobs"] = [_logprobs(rng, a, good, d) for a, good in zip(answers, ok)]
        rows.append(row)
    return rows


def _logprobs(rng: random.Random, answer: str, good: bool, d: float) -> list[float]:
    """Token logprobs: confident and correct answers sit near 0, wrong ones dip lower."""
    centre = -0.05 - 0.35 * d - (0.3 if not good else 0.0)
    return [round(min(0.0, rng.gauss(centre, 0.15)), 4) for _ in range(max(1, len(answer.split())))]
