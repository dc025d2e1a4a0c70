"""A command that needs an optional extra says which one, in one line, and stops."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from router.commands.extras import require


def _app(module: str) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def go() -> None:
        require("parquet", "triage ledger export --format parquet", module)
        typer.echo("ran")

    return app


def test_a_missing_extra_is_one_clear_line() -> None:
    res = CliRunner().invoke(_app("no_such_module_for_triage_tests"), [])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines == ["triage ledger export --format parquet needs the [parquet] extra "
                     "(no_such_module_for_triage_tests not installed): pip install 'triage-gateway[parquet]'"]


def test_an_installed_extra_lets_the_command_run() -> None:
    res = CliRunner().invoke(_app("json"), [])
    assert res.exit_code == 0 and res.output.strip() == "ran"
