"""Commands that need an optional extra say so in one line instead of a traceback."""

from __future__ import annotations

import importlib.util

import typer


def require(extra: str, what: str, *modules: str) -> None:
    """Exit 1 with `<what> needs the [<extra>] extra ...` when any of `modules` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        typer.echo(f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
                   f"pip install 'triage-gateway[{extra}]'", err=True)
        raise typer.Exit(1)
