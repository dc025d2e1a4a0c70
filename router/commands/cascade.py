"""`triage cascade score | eval`: the cascade's answer check, offline.

`score` streams JSONL in bounded memory: each line needs `prompt` (or `messages`) and
`answers` (the cheap answer first), optionally `logprobs` (one token-logprob list per answer),
`response_format` and `tools`; the output line is the input plus `escalate`, `kind` and
`signals`. A bad line is reported on stderr with its number and skipped (`--strict` stops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from router.commands.jsonl import jsonl_io

cascade_app = typer.Typer(no_args_is_help=True, add_completion=False,
                          help="The cascade's answer check, offline (score answers, evaluate APGR).")


def _is_lp(v: Any) -> bool:
    if isinstance(v, dict):
        v = v.get("logprob")
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_row(row: Any) -> str | None:
    """Why a line cannot be scored, or None."""
    if not isinstance(row, dict):
        return "line is not a JSON object"
    msgs, prompt = row.get("messages"), row.get("prompt")
    if not isinstance(msgs, list) and not isinstance(prompt, str):
        return "needs `prompt` (a string) or `messages` (a list)"
    if isinstance(msgs, list) and not all(isinstance(m, dict) for m in msgs):
        return "`messages` must be a list of objects"
    answers = row.get("answers")
    if not isinstance(answers, list) or not answers:
        return "needs `answers`: a non-empty list (the cheap answer first)"
    for i, a in enumerate(answers):
        if not isinstance(a, (str, dict)):
            return f"answers[{i}] must be a string or a message object"
    lps = row.get("logprobs")
    if lps is not None:
        if not isinstance(lps, list) or len(lps) > len(answers):
            return "`logprobs` must be a list with at most one entry per answer"
        for i, lp in enumerate(lps):
            if lp is not None and (not isinstance(lp, list) or not all(_is_lp(v) for v in lp)):
                return f"logprobs[{i}] must be a list of numbers (or {{token, logprob}} objects) or null"
    return None


@cascade_app.command("score")
def score_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="JSONL: prompt|messages, answers, [logprobs] ('-' = stdin)."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL out ('-' = stdout)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad line (exit 2) instead of skipping it."),
    run_code: bool = typer.Option(False, "--run-code", help="EXECUTES code answers (locked-down child process) on "
                                  "calls from the prompt's asserts/doctests and compares outputs. Off by default."),
) -> None:
    """Add `escalate` (higher = escalate), `kind` and `signals` to every line."""
    import orjson

    from classifier.answer_check import check

    runner: Any = None
    if run_code:
        from classifier.training.code_runner import run_code as runner

    n = bad = 0
    why: str | None
    with jsonl_io(input, output) as (fin, fout):
        for lineno, line in enumerate(fin, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except ValueError as exc:
                row, why = None, f"invalid JSON ({exc})"
            else:
                why = validate_row(row)
            if why is None:
                req = row["messages"] if isinstance(row.get("messages"), list) else row["prompt"]
                try:
                    res = check(req, row["answers"], row.get("logprobs"), response_format=row.get("response_format"),
                                tools=row.get("tools"), run_code=runner)
                except (ValueError, TypeError, RecursionError) as exc:
                    why = f"cannot score ({exc})"
            if why is not None:
                bad += 1
                typer.echo(f"line {lineno}: {why}", err=True)
                if strict:
                    raise typer.Exit(2)
                continue
            row["escalate"] = res.escalate
            row["kind"] = res.kind
            row["signals"] = res.signals
            fout.write(orjson.dumps(row) + b"\n")
            n += 1
    typer.echo(f"scored {n} rows" + (f", skipped {bad}" if bad else ""), err=True)


@cascade_app.command("eval")
def eval_cmd(
    input: Optional[Path] = typer.Option(None, "--input", "-i",
                                         help="Labelled JSONL (answers + labels {cheap, strong}); default synthetic."),
    n: int = typer.Option(2000, "--n", help="Synthetic cases when no --input."),
    seed: int = typer.Option(0, "--seed"),
    run_code: bool = typer.Option(False, "--run-code", help="Also score with code execution (see `score --run-code`)."),
) -> None:
    """APGR / AUROC of the check against naive, length, random and oracle, per answer kind."""
    from classifier.training.cascade_eval import main

    argv = ["--input", str(input)] if input else ["--n", str(n), "--seed", str(seed)]
    if run_code:
        argv.append("--run-code")
    try:
        main(argv)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.add_typer(cascade_app, name="cascade")
