"""A small synthetic routing dataset the tests generate themselves (no shared data).

Easy rows (small talk, assistant commands) are solved by both models; hard rows
(proofs, multi-step maths, code design) only by the strong one; a few are unsolved.
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_EASY = [
    "hi there, how are you today?", "thanks, that was helpful!", "what time is it in {city}?",
    "set a timer for {n} minutes", "what's the weather in {city} tomorrow?", "tell me a joke about {thing}",
    "translate 'hello' into {lang}", "remind me to buy {thing} tonight", "who wrote {book}?",
    "good morning! any plans for {city}?", "define the word {thing}", "how do you say {thing} in {lang}?",
]
_HARD = [
    "Prove that for every integer n > {n}, the sum of the first n odd numbers is a perfect square. "
    "Give a rigorous proof by induction, step by step.",
    "Let $f(x) = x^{n} - 3x + 1$. Find all real roots and show that $\\int_0^1 f(x)\\,dx < {n}$.",
    "Design and implement a lock-free concurrent queue in C++ with {n} producers; analyse the "
    "memory ordering and prove it is linearizable.\n```cpp\ntemplate <class T> class Queue {{ }};\n```",
    "A tank holds {n} litres. Pipe A fills it in 3 hours, pipe B drains it in 5 hours and pipe C "
    "fills it in {n} hours. If all open at noon, derive when the tank is full. Explain your reasoning.",
    "Derive the closed form of $\\sum_{{k=1}}^{{n}} k^3$ and prove that it equals "
    "$\\left(\\frac{{n(n+1)}}{{2}}\\right)^2$ for n = {n}.",
    "Optimise this algorithm from O(n^2) to O(n log n) and justify the complexity bound:\n"
    "```python\ndef f(a):\n    return [x for x in a for y in a if x < y]\n```",
]
_FILL = {
    "city": ["Paris", "Lima", "Osaka", "Cairo", "Oslo"],
    "thing": ["milk", "cats", "serendipity", "bread", "rain"],
    "lang": ["French", "German", "Japanese", "Spanish"],
    "book": ["Hamlet", "Dune", "Emma"],
}


def _fill(tpl: str, rng: random.Random) -> str:
    kw = {k: rng.choice(v) for k, v in _FILL.items()}
    kw["n"] = rng.randint(2, 99)
    return tpl.format(**kw)


def make_rows(n: int = 240, seed: int = 7, source: str = "fixture") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hard = i % 2 == 1
        prompt = _fill(rng.choice(_HARD if hard else _EASY), rng) + f" [#{i}]"
        if hard:
            cheap, strong = (0.0, 1.0) if rng.random() < 0.85 else (1.0, 1.0)
            if rng.random() < 0.1:
                strong = 0.0
        else:
            cheap, strong = (1.0, 1.0) if rng.random() < 0.9 else (0.0, 1.0)
        rows.append({"prompt": prompt, "source": f"{source}/" + ("hard" if hard else "easy"),
                     "scores": {"tiny-model": cheap, "big-model": strong}})
    return rows


def write_fixture(path: str | Path, n: int = 240, seed: int = 7, source: str = "fixture") -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w") as fh:
        for r in make_rows(n, seed, source):
            fh.write(json.dumps(r) + "\n")
    return p
