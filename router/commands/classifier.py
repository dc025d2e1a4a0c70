"""`triage classify | train | eval`: thin typer wrappers over classifier/training."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from router.commands.extras import require


def _paths(data: list[str] | None, extra: list[str] | None) -> list[str]:
    # `--data a b c` works: typer binds `a` to --data and the rest land in `extra`.
    out = list(data or []) + list(extra or [])
    if not out:
        raise typer.BadParameter("give at least one --data PATH")
    return out


def classify_cmd(
    input: Path = typer.Option(..., "--input", "-i", help="JSONL with `prompt` or `messages` per line ('-' = stdin)."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL out ('-' = stdout)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Artifact (default: shipped)."),
) -> None:
    """Add complexity, tier and signals to every line; streams in bounded memory."""
    import orjson

    from classifier import Classifier

    clf = Classifier.load(model)
    fin = sys.stdin.buffer if str(input) == "-" else open(input, "rb")
    fout = sys.stdout.buffer if str(output) == "-" else open(output, "wb")
    n = bad = 0
    try:
        for lineno, line in enumerate(fin, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("line is not a JSON object")
            except ValueError as exc:
                bad += 1
                typer.echo(f"line {lineno}: skipped ({exc})", err=True)
                continue
            req = row.get("messages") if isinstance(row.get("messages"), list) else row.get("prompt")
            c = clf.classify(req if isinstance(req, (str, list)) else "", row.get("tools"))
            row["complexity"] = c.complexity
            row["tier"] = c.tier
            row["signals"] = c.signals
            fout.write(orjson.dumps(row) + b"\n")
            n += 1
    finally:
        if fin is not sys.stdin.buffer:
            fin.close()
        if fout is not sys.stdout.buffer:
            fout.close()
        else:
            fout.flush()
    typer.echo(f"classified {n} rows" + (f", skipped {bad}" if bad else ""), err=True)


def train_cmd(
    data: List[str] = typer.Option(..., "--data", help="JSONL files or folders (repeatable); ledger exports accepted."),
    extra: Optional[List[str]] = typer.Argument(None, help="More data paths."),
    out: Path = typer.Option(..., "--out", help="Artifact path to write (JSON)."),
    c: float = typer.Option(1.0, "--C", help="Inverse L2 strength."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Compare in the report."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write the cost/quality PNG."),
) -> None:
    """Train the classifier and print the held-out report."""
    require("train", "triage train", "sklearn", "matplotlib")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from classifier.training.evaluate import evaluate, format_report
    from classifier.training.train import train

    paths = _paths(data, extra)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as prog:
        tasks: dict[str, Any] = {}  # stage -> rich TaskID

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=max(total, 1))
            prog.update(tasks[stage], completed=done, total=max(total, 1))

        try:
            summary = train(paths, out, c=c, progress=progress)
        except ValueError as e:
            prog.stop()
            console.print(f"[red]cannot train:[/red] {e}")
            raise typer.Exit(2) from None
        ev_task = prog.add_task("held-out eval", total=None)
        report = evaluate(out, paths, plot=plot, baselines=baselines,
                          progress=lambda msg: prog.update(ev_task, description=f"eval {msg}"))
        prog.update(ev_task, total=1, completed=1)
    typer.echo(f"wrote {out} ({summary['bytes']} bytes) in {summary['seconds']}s: "
               f"fit={summary['n_fit']} cal={summary['n_cal']} vocab={summary['n_vocab']} "
               f"thresholds={summary['thresholds']}")
    typer.echo(format_report(report) if report["files"] else "no held-out rows with per-model outcomes")


def eval_cmd(
    model: Optional[Path] = typer.Option(None, "--model", help="Artifact (default: shipped)."),
    data: List[str] = typer.Option(..., "--data", help="JSONL files or folders (repeatable)."),
    extra: Optional[List[str]] = typer.Argument(None, help="More data paths."),
    plot: Path = typer.Option(Path("triage_eval.png"), "--plot", help="Cost/quality curves PNG."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines"),
    lofo: bool = typer.Option(False, "--lofo", help="Leave-one-file-out instead: retrain with each routing file held out whole."),
) -> None:
    """AUROC, APGR, cost saved at 95% quality and ECE on the held-out split, vs baselines."""
    require("train", "triage eval", "sklearn", "matplotlib")
    if lofo:
        from classifier.training.lofo import main as lofo_main

        argv = ["--data", *_paths(data, extra)] + (["--baselines"] if baselines else [])
        lofo_main(argv + (["--json", str(json_out)] if json_out else []))
        return
    from classifier.training.evaluate import evaluate, format_report

    report = evaluate(model, _paths(data, extra), plot=plot, baselines=baselines)
    typer.echo(format_report(report) if report["files"] else "no held-out rows with per-model outcomes")
    typer.echo(f"\nplot: {report.get('plot') or 'skipped (matplotlib not installed)'}")
    if json_out:
        slim = {k: v for k, v in report.items()}
        slim["files"] = {f: {k: v for k, v in r.items() if k != "curves"} for f, r in report["files"].items()}
        json_out.write_text(json.dumps(slim, indent=1, default=float))


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
