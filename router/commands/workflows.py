"""`triage workflows`: the deepest and most redundant multi-step workflows, and cost by depth."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command()
    def workflows(
        tenant: str = typer.Option(..., "--tenant", help="The tenant whose workflows to show."),
        limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="How many workflows to list."),
        sort: str = typer.Option("redundant", "--sort", help="redundant | depth | cost | recent"),
        as_json: bool = typer.Option(False, "--json"),
        redis_url: Optional[str] = typer.Option(None, "--redis-url", envvar="REDIS_URL"),
        config: Optional[Path] = typer.Option(None, "--config", "-c"),
    ) -> None:
        """Per workflow: steps, depth, tiers, cost, cost per step, redundant context (tokens re-sent by later
        steps, what they cost) and how much of it the provider's prompt cache discounted."""
        import orjson  # noqa: PLC0415

        from accounting.workflows import Workflows, cost_by_depth  # noqa: PLC0415
        from router.commands.accounting import _run, resolve_redis_url  # noqa: PLC0415

        keys = {"redundant": "redundant_nusd", "depth": "depth", "cost": "cost_nusd", "recent": "last_ts"}
        if sort not in keys:
            Console(stderr=True).print(f"[red]--sort takes {', '.join(keys)}[/]")
            raise typer.Exit(2)
        rows: list[dict[str, Any]] = _run(resolve_redis_url(redis_url, config),
                                          lambda r: Workflows(r).summary(tenant, 10_000))
        rows.sort(key=lambda w: w[keys[sort]], reverse=True)
        depth = cost_by_depth(rows)
        out: dict[str, Any] = {"tenant": tenant, "workflows": rows[:limit], "cost_by_depth": depth}
        if as_json:
            sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        con = Console(width=160)
        t = Table(title=f"Workflows of {tenant} (by {sort})")
        for col in ("workflow", "steps", "depth", "tiers", "cost", "per step", "redundant tokens", "redundant $",
                    "cached / redundant"):
            t.add_column(col)
        for w in rows[:limit]:
            cs = w["redundant_cached_share"]
            t.add_row(w["workflow"], str(w["steps"]), str(w["depth"]),
                      ", ".join(f"{k} {v}" for k, v in sorted(w["tiers"].items())),
                      f"${w['cost_nusd'] / 1e9:.6f}", f"${w['cost_per_step_nusd'] / 1e9:.6f}",
                      f"{w['redundant_tokens']} ({w['redundant_share'] * 100:.0f}%)", f"${w['redundant_nusd'] / 1e9:.6f}",
                      "-" if cs is None else f"{cs * 100:.0f}%")
        con.print(t)
        d = Table(title="Mean cost of the n-th step (how cost compounds with depth)")
        for col in ("depth", "workflows", "mean cost"):
            d.add_column(col)
        for r in depth:
            d.add_row(str(r["depth"]), str(r["workflows"]), f"${r['mean_cost_nusd'] / 1e9:.6f}")
        con.print(d)
