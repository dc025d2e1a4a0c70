"""Evaluate the cascade's answer check: APGR of `escalate` given answers + correctness labels.

Input rows (JSONL) are what `triage cascade score` reads plus two labels: ``cheap`` (quality
of the first answer, 0..1) and ``strong`` (quality of the strong model's answer), either as
top-level ``cheap_correct``/``strong_correct`` or under ``labels: {cheap, strong}``. The
report gives, overall and per answer kind, APGR (area under the quality-gain curve as the
escalated share grows from 0 to 1, highest score first) and AUROC for "the cheap answer is
wrong", for the check and for baselines: random, answer length, and the naive check the
issue measured (escalate iff the first option letter differs between answers).

Without ``--input`` it scores synthetic cases from `cascade_synth` (MCQ, math, code, JSON,
free text). Synthetic numbers show the harness and the check behave; they are not a
measurement of real traffic.

    python -m classifier.training.cascade_eval [--input ROWS.jsonl] [--n 2000] [--seed 0] [--run-code]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from classifier.answer_check import answer_text, check
from classifier.training.metrics import apgr, auroc

Scorer = Callable[[Mapping[str, Any]], float]


def labels(row: Mapping[str, Any]) -> tuple[float, float]:
    lab = row.get("labels") if isinstance(row.get("labels"), Mapping) else {}
    cheap = lab.get("cheap", row.get("cheap_correct"))
    strong = lab.get("strong", row.get("strong_correct"))
    if cheap is None or strong is None:
        raise ValueError("row needs labels {cheap, strong} or cheap_correct/strong_correct")
    return float(cheap), float(strong)


def check_scorer(row: Mapping[str, Any]) -> float:
    req = row.get("messages") if isinstance(row.get("messages"), list) else row.get("prompt", "")
    return check(req, row["answers"], row.get("logprobs"), response_format=row.get("response_format"),
                 tools=row.get("tools")).escalate


def check_no_logprobs(row: Mapping[str, Any]) -> float:
    return check_scorer({**row, "logprobs": None})


_FIRST_LETTER = re.compile(r"\b([A-J])\b")


def check_run_code(row: Mapping[str, Any]) -> float:
    from classifier.training.code_runner import run_code

    req = row.get("messages") if isinstance(row.get("messages"), list) else row.get("prompt", "")
    return check(req, row["answers"], row.get("logprobs"), response_format=row.get("response_format"),
                 tools=row.get("tools"), run_code=run_code).escalate


def naive_scorer(row: Mapping[str, Any]) -> float:
    """The issue's naive check: first option letter in each answer; escalate on mismatch."""
    firsts = []
    for a in row["answers"]:
        m = _FIRST_LETTER.search(answer_text(a))
        firsts.append(m.group(1) if m else None)
    return float(len(set(firsts)) > 1)


def length_scorer(row: Mapping[str, Any]) -> float:
    return float(len(answer_text(row["answers"][0])))


def random_scorer(row: Mapping[str, Any]) -> float:
    return 0.5      # all ties = the expectation over random routers


def oracle_scorer(row: Mapping[str, Any]) -> float:
    """Reads the labels: the ceiling any check could reach on these rows."""
    cheap, strong = labels(row)
    return strong - cheap


SCORERS: dict[str, Scorer] = {"check": check_scorer, "check_no_logprobs": check_no_logprobs,
                              "naive_letter": naive_scorer, "length": length_scorer, "random": random_scorer,
                              "oracle": oracle_scorer}


def evaluate(rows: Sequence[Mapping[str, Any]], scorers: Mapping[str, Scorer] | None = None
             ) -> dict[str, Any]:
    scorers = scorers or SCORERS
    weak = np.array([labels(r)[0] for r in rows])
    strong = np.array([labels(r)[1] for r in rows])
    kinds = np.array([r.get("kind") or check_kind(r) for r in rows])
    scores = {name: np.array([fn(r) for r in rows], dtype=float) for name, fn in scorers.items()}
    groups: dict[str, np.ndarray] = {"all": np.ones(len(rows), bool)}
    for k in sorted(set(kinds)):
        groups[k] = kinds == k
    out: dict[str, Any] = {}
    for g, m in groups.items():
        res: dict[str, Any] = {"n": int(m.sum()), "cheap_quality": float(weak[m].mean()),
                               "strong_quality": float(strong[m].mean())}
        for name, s in scores.items():
            res[name] = {"apgr": apgr(s[m], weak[m], strong[m]), "auroc": auroc(s[m], weak[m] < 0.5)}
        out[g] = res
    return out


def check_kind(row: Mapping[str, Any]) -> str:
    req = row.get("messages") if isinstance(row.get("messages"), list) else row.get("prompt", "")
    return check(req, row["answers"], response_format=row.get("response_format"), tools=row.get("tools")).kind


def format_report(rep: Mapping[str, Any]) -> str:
    names = [k for k in next(iter(rep.values())) if isinstance(next(iter(rep.values()))[k], dict)]
    lines = [f"{'group':<8} {'n':>5} {'cheap':>6} {'strong':>6}  " + "  ".join(f"{n:>17}" for n in names),
             f"{'':<8} {'':>5} {'':>6} {'':>6}  " + "  ".join(f"{'APGR / AUROC':>17}" for _ in names)]
    for g, res in rep.items():
        cells = "  ".join(f"{res[n]['apgr']:>8.3f} / {res[n]['auroc']:<6.3f}" for n in names)
        lines.append(f"{g:<8} {res['n']:>5} {res['cheap_quality']:>6.2f} {res['strong_quality']:>6.2f}  {cells}")
    return "\n".join(lines)


def read_rows(path: str) -> Iterable[dict[str, Any]]:
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("answers"), list) or not row["answers"]:
                    raise ValueError(f"line {lineno}: needs a non-empty `answers` list")
                labels(row)
                yield row


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", help="labelled JSONL (default: synthetic cases)")
    ap.add_argument("--n", type=int, default=2000, help="synthetic cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-code", action="store_true", help="add the check with code execution (runs answers)")
    args = ap.parse_args(argv)
    if args.input:
        rows = list(read_rows(args.input))
    else:
        from classifier.training.cascade_synth import synthetic_cases
        rows = synthetic_cases(args.n, seed=args.seed)
    scorers = dict(SCORERS)
    if args.run_code:
        scorers = {"check": check_scorer, "check_run_code": check_run_code, **scorers}
    print(format_report(evaluate(rows, scorers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
