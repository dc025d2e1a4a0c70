"""`triage forecast`: replay a ledger window (or a JSONL of prompts) under other policies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

err = Console(stderr=True)


def _load_rows(args: dict[str, Any]) -> list[Any]:
    from router.forecast.profiles import rows_from_export  # noqa: PLC0415

    if args["ledger_file"] is not None:
        import orjson  # noqa: PLC0415

        try:
            lines = args["ledger_file"].read_bytes().splitlines()
        except OSError as e:
            err.print(f"[red]Cannot read {args['ledger_file']}:[/] {e.strerror}")
            raise typer.Exit(2) from None
        try:
            return rows_from_export(orjson.loads(ln) for ln in lines if ln.strip())
        except orjson.JSONDecodeError as e:
            err.print(f"[red]{args['ledger_file']}: not JSONL:[/] {e}")
            raise typer.Exit(2) from None
    from accounting import reports  # noqa: PLC0415
    from router.commands.accounting import _run, resolve_cold, resolve_redis_url  # noqa: PLC0415

    url = resolve_redis_url(args["redis_url"], args["config"])
    cold = resolve_cold(None, args["config"])
    return rows_from_export(_run(url, lambda r: reports.export_rows(r, args["tenant"], args["since"], cold=cold)))


def _prompt_rows(path: Path, clf: Any) -> list[Any]:
    import orjson  # noqa: PLC0415

    from accounting.tokens import estimate_prompt_tokens  # noqa: PLC0415
    from router.forecast.profiles import Row  # noqa: PLC0415

    rows = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        err.print(f"[red]Cannot read {path}:[/] {e.strerror}")
        raise typer.Exit(2) from None
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            obj = orjson.loads(ln)
        except orjson.JSONDecodeError:
            err.print(f"[red]{path}:{i}: not JSON[/]")
            raise typer.Exit(2) from None
        msgs = obj.get("messages") if isinstance(obj, dict) else None
        if msgs is None and isinstance(obj, dict) and isinstance(obj.get("prompt"), str):
            msgs = [{"role": "user", "content": obj["prompt"]}]
        if not isinstance(msgs, list):
            err.print(f"[red]{path}:{i}: needs `prompt` (a string) or `messages` (a list)[/]")
            raise typer.Exit(2)
        c = clf.classify(msgs)
        rows.append(Row(request_id=f"prompt-{i}", tier="", complexity=float(c.complexity),
                        client_prompt=max(estimate_prompt_tokens(msgs), 1), calls=[], cost_usd=0.0,
                        cap_usd=obj.get("max_cost")))
    return rows


def register(app: typer.Typer) -> None:
    @app.command()
    def forecast(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="The gateway's config (default: embedded)."),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="One tenant's ledger (default: all)."),
        since: str = typer.Option("30d", "--since", help="Ledger window, e.g. 7d, 24h."),
        prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSONL of prompt|messages to forecast instead "
                                               "of the ledger's requests (classified now; the ledger still teaches "
                                               "token usage when reachable)."),
        ledger_file: Optional[Path] = typer.Option(None, "--ledger-file", help="Read the ledger from a "
                                                   "`triage ledger export --format jsonl` file instead of Redis."),
        redis_url: Optional[str] = typer.Option(None, "--redis-url", envvar="REDIS_URL"),
        policy: list[str] = typer.Option([], "--policy", "-p", help="current | always-fast | always-top | "
                                         "NAME:key=value,... (repeatable; see docs/forecast.md)."),
        policies: Optional[Path] = typer.Option(None, "--policies", help="YAML list of policies."),
        qps: Optional[float] = typer.Option(None, "--qps", min=0.0, help="Traffic rate for monthly/annual figures "
                                            "(default: the rate observed in the window)."),
        sweep: Optional[str] = typer.Option(None, "--sweep", help="`reasoning`: cost of reasoning depth K=1..16."),
        depths: str = typer.Option("1,2,4,8,16", "--depths", help="Depths (thinking steps) for --sweep reasoning."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
        plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write a cost-vs-quality PNG here."),
    ) -> None:
        """What other policies would cost (and deliver) on this traffic, per 1k requests, month and year."""
        import orjson  # noqa: PLC0415

        from router.config import ConfigError, TriageConfig  # noqa: PLC0415
        from router.forecast import forecast as run_forecast  # noqa: PLC0415
        from router.forecast import policies as pol  # noqa: PLC0415
        from router.forecast.render import plot, policies_table, sweep_table  # noqa: PLC0415
        from router.forecast.sweep import sweep_reasoning  # noqa: PLC0415
        from router.runtime import load_classifier, price_book  # noqa: PLC0415

        try:
            cfg = TriageConfig.load(config)
            prices = price_book(cfg)
            variants = [pol.parse(s, cfg) for s in (policy or ["current", "always-fast", "always-top"])]
            if policies is not None:
                variants += pol.load_file(policies, cfg)
            depth_list = tuple(int(x) for x in depths.split(",") if x.strip())
        except (ConfigError, ValueError) as e:
            err.print(f"[red]{e}[/]")
            raise typer.Exit(2) from None
        if sweep not in (None, "reasoning"):
            err.print("[red]--sweep takes `reasoning`[/]")
            raise typer.Exit(2)
        clf = load_classifier()
        args = {"config": config, "tenant": tenant, "since": since, "ledger_file": ledger_file, "redis_url": redis_url}
        if prompts is not None:
            rows = _prompt_rows(prompts, clf)
            try:
                learned = _load_rows(args)
            except typer.Exit:
                err.print("[yellow]No ledger reachable: token usage comes from structural estimates only.[/]")
                learned = []
        else:
            rows, learned = _load_rows(args), None
        if not rows:
            err.print("[red]No requests to forecast[/] (empty ledger window or prompts file).")
            raise typer.Exit(1)
        result, fc = run_forecast(cfg, prices, rows, variants, clf.tier_for, qps=qps, learn_from=learned)
        if sweep == "reasoning":
            try:
                result["sweep"] = sweep_reasoning(fc, rows, result["qps"], depth_list)
            except ValueError as e:
                err.print(f"[red]{e}[/]")
                raise typer.Exit(2) from None
        if plot_path is not None:
            try:
                result["plot"] = str(plot(result, plot_path))
            except RuntimeError as e:
                err.print(f"[yellow]{e}[/]")
        if as_json:
            sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        out = Console(width=160)
        policies_table(out, result)
        if "sweep" in result:
            sweep_table(out, result["sweep"])
        if result.get("plot"):
            out.print(f"plot: {result['plot']}")

