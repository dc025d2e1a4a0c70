"""`triage classify | train | eval`: thin typer wrappers over classifier/training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, NoReturn, Optional

import typer

from router.commands.extras import require
from router.commands.jsonl import jsonl_io


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

    try:
        clf = Classifier.load(model)
    except (OSError, ValueError) as e:
        _fail(f"{model}: {getattr(e, 'strerror', None) or e}")
    n = bad = 0
    with jsonl_io(input, output) as (fin, fout):
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
    typer.echo(f"classified {n} rows" + (f", skipped {bad}" if bad else ""), err=True)


def _opts(items: list[str] | None) -> dict:
    from classifier.training.fit import RECIPE
    out: dict = {}
    for it in items or []:
        k, _, v = it.partition("=")
        if k not in RECIPE:
            raise typer.BadParameter(f"unknown recipe key {k!r}; known: {', '.join(RECIPE)}", param_hint="--set")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
        if isinstance(out[k], list):
            out[k] = tuple(out[k])
    return out


def _fail(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def train_cmd(
    data: List[str] = typer.Option(..., "--data", help="JSONL files or folders (repeatable); ledger exports accepted."),
    extra: Optional[List[str]] = typer.Argument(None, help="More data paths."),
    out: Path = typer.Option(..., "--out", help="Artifact path to write (JSON)."),
    c: Optional[float] = typer.Option(None, "--C", help="Inverse L2 strength (recipe key C)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Recipe override key=JSON (see classifier/README.md)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Compare in the report."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write the cost/quality PNG."),
) -> None:
    """Train the classifier (the LOSO-chosen recipe) and print the held-out report.

    Ledger export rows count one each, like any public row: feedback is noisy, and
    up-weighting it erased the gain from a tenant's own rows in the issue-12 experiment."""
    require("train", "triage train", "sklearn", "matplotlib")
    from classifier.training.evaluate import evaluate, format_report
    from classifier.training.train import DataError, train

    paths = _paths(data, extra)
    opts = _opts(sets)
    if c is not None:
        opts["C"] = c
    try:
        summary = train(paths, out, opts=opts)
    except DataError as e:
        _fail(str(e))
    except ValueError as e:
        _fail(f"cannot train: {e}")
    typer.echo(f"wrote {out} ({summary['bytes']} bytes, {summary['version']}) in {summary['seconds']}s: "
               f"fit={summary['n_fit']} cal={summary['n_cal']} vocab={summary['n_vocab']} "
               f"thresholds={summary['thresholds']}")
    report = evaluate(out, paths, plot=plot, baselines=baselines)
    typer.echo(format_report(report) if report["files"] else "no held-out rows with per-model outcomes")


def eval_cmd(
    model: Optional[Path] = typer.Option(None, "--model", help="Artifact (default: shipped)."),
    data: List[str] = typer.Option(..., "--data", help="JSONL files or folders (repeatable)."),
    extra: Optional[List[str]] = typer.Argument(None, help="More data paths."),
    plot: Path = typer.Option(Path("triage_eval.png"), "--plot", help="Cost/quality curves PNG."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines"),
    loso: bool = typer.Option(False, "--loso", help="Leave-one-source-out instead: retrain with each source held out."),
    ablation: bool = typer.Option(False, "--ablation", help="With --loso: every candidate part on top of the lean baseline."),
) -> None:
    """AUROC, APGR, cost saved at 95% quality and ECE on the held-out split, vs baselines."""
    require("train", "triage eval", "sklearn", "matplotlib")
    from classifier.training.train import DataError, load_data

    paths = _paths(data, extra)
    try:
        load_data(paths)   # one-line error for a bad path before anything heavy runs
    except DataError as e:
        _fail(str(e))
    if loso:
        from classifier.training.loso import main as loso_main

        argv = ["--data", *paths] + (["--baselines"] if baselines else []) + (["--ablation"] if ablation else [])
        loso_main(argv + (["--json", str(json_out)] if json_out else []))
        return
    from classifier.training.evaluate import evaluate, format_report

    try:
        report = evaluate(model, paths, plot=plot, baselines=baselines)
    except (OSError, ValueError) as e:
        _fail(str(e))
    typer.echo(format_report(report) if report["files"] else "no held-out rows with per-model outcomes")
    typer.echo(f"\nplot: {report.get('plot') or 'skipped (matplotlib not installed)'}")
    if json_out:
        slim = {k: v for k, v in report.items()}
        slim["files"] = {f: {k: v for k, v in r.items() if k != "curves"} for f, r in report["files"].items()}
        json_out.write_text(json.dumps(slim, indent=1, default=float))


def _store_of(store: Path | None, config: Path | None) -> tuple[Path, Any]:
    """The promote store and the config's classifier spec (relative paths from the config's folder)."""
    spec = None
    base = None
    if config is not None:
        from router.config import ConfigError, TriageConfig
        try:
            cfg = TriageConfig.load(config)
        except ConfigError as e:
            _fail(str(e))
        spec, base = cfg.classifier, Path(config).resolve().parent
        if store is None and spec.store:
            store = Path(spec.store) if Path(spec.store).is_absolute() else base / spec.store
    if store is None:
        _fail("no classifier store: pass --store DIR or a --config with classifier.store")
    return store, (spec, base)


def _active_for(store: Path, spec_base: tuple[Any, Path | None], tenant: str | None):
    from router.classifiers import ClassifierSet, read_active
    spec, base = spec_base
    try:
        read_active(store)
        return ClassifierSet(_with_store(spec, store), base).for_tenant(tenant)
    except ValueError as e:
        _fail(str(e))


def _with_store(spec: Any, store: Path) -> Any:
    from router.config import ClassifierSpec
    spec = spec or ClassifierSpec()
    return spec.model_copy(update={"store": str(store.resolve())})


def _ledger_rows(ledger: Path | None, tenant: str | None, redis_url: str | None, config: Path | None,
                 state_dir: Path | None) -> list[dict]:
    if ledger is not None:
        import orjson
        try:
            return [orjson.loads(ln) for ln in ledger.read_bytes().splitlines() if ln.strip()]
        except OSError as e:
            _fail(f"{ledger}: {e.strerror or e}")
        except ValueError as e:
            _fail(f"{ledger}: not JSONL ({e})")
    from accounting import reports
    from router.commands.accounting import _run, resolve_redis_url
    return _run(resolve_redis_url(redis_url, config, state_dir), lambda r: reports.export_rows(r, tenant, None))


def _fmt_fig(f: dict) -> str:
    if not f.get("n"):
        return "no held-out rows"
    a = "-" if f["auroc"] is None else f"{f['auroc']:.3f}"
    return f"n={f['n']} (bad answers {f['positives']}) AUROC {a} Brier {f['brier']:.3f}"


def register_lifecycle(app: typer.Typer) -> None:
    from router.commands.accounting import ConfigOpt, RedisOpt, StateOpt

    clf = typer.Typer(no_args_is_help=True, help="Per-tenant classifier artifacts: propose, promote, rollback.")
    StoreOpt = typer.Option(None, "--store", help="Promote store folder (default: the config's classifier.store).")
    LedgerOpt = typer.Option(None, "--ledger", help="A `triage ledger export` JSONL instead of reading Redis.")

    @clf.command("propose")
    def propose_cmd(
        tenant: str = typer.Option(..., "--tenant"),
        data: List[str] = typer.Option(..., "--data", help="Public training data (e.g. ../shared/data)."),
        out: Path = typer.Option(..., "--out", help="Candidate artifact to write."),
        loso: bool = typer.Option(True, "--loso/--no-loso", help="Also leave-one-source-out, with and without the tenant's rows."),
        ledger: Optional[Path] = LedgerOpt, store: Optional[Path] = StoreOpt,
        redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt, state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Train a candidate from the public data plus the tenant's rated rows; compare with the active model."""
        require("train", "triage classifier propose", "sklearn")
        from classifier.training.propose import propose
        from classifier.training.train import DataError

        current = (_active_for(*_store_of(store, config), tenant) if (store or config) else None)
        if current is None:
            from classifier import Classifier
            current = Classifier.load()
        rows = _ledger_rows(ledger, tenant, redis_url, config, state_dir)
        try:
            rep = propose(data, rows, tenant, current, out, loso=loso)
        except DataError as e:
            _fail(str(e))
        except ValueError as e:
            _fail(f"cannot train: {e}")
        c, k = rep["candidate"], rep["current"]
        typer.echo(f"tenant {tenant}: {rep['tenant_rows']['train']} rated rows trained on, "
                   f"{rep['tenant_rows']['held_out']} held out")
        typer.echo(f"  current   {k['version']}: tenant held-out {_fmt_fig(k['tenant_held_out'])}")
        typer.echo(f"  candidate {c['version']}: tenant held-out {_fmt_fig(c['tenant_held_out'])}")
        if loso:
            for name, r in (("current", k), ("candidate", c)):
                s = r["loso"]
                typer.echo(f"  LOSO {name:<9} mean {s['loso_mean']:.4f}  APGR {s.get('apgr_mean', float('nan')):.3f}  "
                           f"AUROC {s.get('auroc_gold_mean', float('nan')):.3f}")
        typer.echo(f"wrote {out}; " + (f"promote would be refused: {rep['refusal']}" if rep["refusal"]
                                        else f"promote with: triage classifier promote {out} --tenant {tenant}"))

    @clf.command("promote")
    def promote_cmd(
        artifact: Path = typer.Argument(..., help="Candidate artifact (from propose or train)."),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="Default: every tenant without its own."),
        force: bool = typer.Option(False, "--force", help="Promote even if worse on the tenant's held-out rows."),
        ledger: Optional[Path] = LedgerOpt, store: Optional[Path] = StoreOpt,
        redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt, state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Make the artifact the one the proxy scores this tenant's requests with (all workers, next request)."""
        from classifier import Classifier
        from classifier.training.propose import split, tenant_examples, tenant_figures, worse
        from router import classifiers

        st, spec_base = _store_of(store, config)
        try:
            cand = Classifier.load(artifact)
        except (OSError, ValueError) as e:
            _fail(f"{artifact}: {getattr(e, 'strerror', None) or e}")
        current = _active_for(st, spec_base, tenant)
        held: list = []
        if tenant is not None:
            _, held = split(tenant_examples(_ledger_rows(ledger, tenant, redis_url, config, state_dir), tenant))
        fc, fk = tenant_figures(cand, held), tenant_figures(current, held)
        typer.echo(f"tenant held-out rows: current {current.version} {_fmt_fig(fk)}; candidate {cand.version} {_fmt_fig(fc)}")
        why = worse(fc, fk) if tenant is not None else None
        if why and cand.version != current.version:
            if not force:
                _fail(f"refused: {why} (--force to promote anyway)")
            typer.echo(f"forced despite: {why}")
        entry = classifiers.promote(st, artifact, tenant, note="forced" if why and force else "")
        typer.echo(f"promoted {entry['version']} for {tenant or 'every tenant'} in {st}")

    @clf.command("rollback")
    def rollback_cmd(
        tenant: Optional[str] = typer.Option(None, "--tenant"),
        store: Optional[Path] = StoreOpt, config: Optional[Path] = ConfigOpt,
    ) -> None:
        """Re-activate the previously promoted artifact (or the configured one if there was none)."""
        from router import classifiers

        st, _ = _store_of(store, config)
        try:
            entry = classifiers.rollback(st, tenant)
        except ValueError as e:
            _fail(str(e))
        who = tenant or "every tenant"
        typer.echo(f"rolled back {who} to {entry['version']}" if entry else f"rolled back {who} to the configured artifact")

    app.add_typer(clf, name="classifier")


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    register_lifecycle(app)
