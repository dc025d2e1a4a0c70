"""`triage ledger compact`: move old ledger entries from Redis to the cold (Parquet) ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from router.commands.common import (
    ColdOpt,
    ConfigOpt,
    JsonOpt,
    RedisOpt,
    StateOpt,
    _dump,
    _run,
    err,
    out,
    resolve_cold,
    resolve_redis_url,
)


def register_compact(ledger: typer.Typer) -> None:
    @ledger.command("compact")
    def ledger_compact(
        older_than_days: Optional[float] = typer.Option(
            None, "--older-than-days", help="Move entries settled longer ago than this (default: config, else 30)."),
        tenant: Optional[list[str]] = typer.Option(None, "--tenant", help="Only these tenants (repeatable)."),
        as_json: bool = JsonOpt, redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt,
        state_dir: Optional[Path] = StateOpt, cold: Optional[str] = ColdOpt,
    ) -> None:
        """Move old ledger entries from Redis to day-partitioned Parquet (crash-safe, re-runnable)."""
        from accounting.cold import compact_all  # noqa: PLC0415

        cl = resolve_cold(cold, config)
        if cl is None:
            err.print("[red]No cold ledger:[/] pass --cold DIR|URL, set TRIAGE_COLD_LEDGER, "
                      "or accounting.cold_ledger_url in --config.")
            raise typer.Exit(2)
        days = older_than_days
        if days is None and config is not None:
            import yaml  # noqa: PLC0415

            days = ((yaml.safe_load(Path(config).read_text()) or {}).get("accounting") or {}).get("cold_after_days")
        days = 30.0 if days is None else float(days)
        res = _run(resolve_redis_url(redis_url, config, state_dir), lambda r: compact_all(r, cl, days, tenant or None))
        rows = [{"tenant": x.tenant, "rows": x.rows, "files": x.files, "batches": x.batches} for x in res]
        if as_json:
            _dump({"cold": cl.url, "older_than_days": days, "tenants": rows})
            return
        for x in rows:
            out.print(f"{x['tenant']}: moved {x['rows']} entries in {x['files']} files")
        err.print(f"compacted {sum(x['rows'] for x in rows)} entries older than {days:g} days into {cl.url}")
