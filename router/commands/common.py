"""What the accounting commands share: where Redis and the cold ledger are, output, common options."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

err = Console(stderr=True)
out = Console()
if not out.is_terminal:
    # Piped or in CI rich assumes 80 columns and would cut dollar figures short with "…".
    out = Console(width=200)

RedisOpt = typer.Option(None, "--redis-url", help="Redis URL (default: $REDIS_URL, the config's, or the running proxy's).")
ConfigOpt = typer.Option(None, "--config", "-c", help="Config file whose redis_url to use.")
StateOpt = typer.Option(None, "--state-dir", help="State dir of the running proxy (default: $TRIAGE_STATE_DIR or .triage).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
ColdOpt = typer.Option(None, "--cold", envvar="TRIAGE_COLD_LEDGER",
                       help="Cold ledger root (directory or fsspec URL, e.g. s3://bucket/triage); "
                            "default: the config's accounting.cold_ledger_url.")


def resolve_cold(cold: str | None, config: Path | None) -> Any:
    """The ColdLedger to read or compact into, or None when none is configured."""
    url = cold
    if url is None and config is not None:
        import yaml  # noqa: PLC0415

        url = ((yaml.safe_load(Path(config).read_text()) or {}).get("accounting") or {}).get("cold_ledger_url")
    if not url:
        return None
    from accounting.cold import ColdLedger, ColdUnavailable  # noqa: PLC0415

    try:
        return ColdLedger(str(url))
    except ColdUnavailable as e:
        err.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None


def resolve_redis_url(redis_url: str | None, config: Path | None = None, state_dir: Path | None = None) -> str:
    if redis_url:
        return redis_url
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if config is not None:
        import yaml  # noqa: PLC0415

        raw = yaml.safe_load(Path(config).read_text()) or {}
        url = raw.get("redis_url")
        from accounting.redis_client import cluster_url, sentinel_url  # noqa: PLC0415

        if raw.get("redis_cluster_nodes"):
            url = cluster_url(raw["redis_cluster_nodes"])
        elif raw.get("redis_sentinels") and raw.get("redis_sentinel_service"):
            url = sentinel_url(raw["redis_sentinels"], raw["redis_sentinel_service"])
        if isinstance(url, str) and url.startswith("os.environ/"):
            url = os.environ.get(url.split("/", 1)[1])
        if url:
            return str(url)
    from accounting.redis_server import running_url_from_state  # noqa: PLC0415

    sd = state_dir or Path(os.environ.get("TRIAGE_STATE_DIR", ".triage"))
    url = running_url_from_state(sd)
    if url:
        return url
    err.print(f"[red]No Redis found:[/] pass --redis-url, set REDIS_URL, or start `triage serve` (state dir {sd}).")
    raise typer.Exit(2)


def _run(url: str, fn: Any) -> Any:
    from accounting.redis_client import close_client, make_client  # noqa: PLC0415

    async def main() -> Any:
        try:
            r = make_client(url, socket_timeout_s=5, connect_timeout_s=2, max_connections=8, retries=1)
        except ValueError as e:
            err.print(f"[red]Bad Redis URL:[/] {e}")
            raise typer.Exit(2) from None
        try:
            return await fn(r)
        finally:
            await close_client(r)

    try:
        return asyncio.run(main())
    except (ConnectionError, OSError) as e:
        err.print(f"[red]Cannot reach Redis at {url}:[/] {e}")
        raise typer.Exit(2) from None
    except Exception as e:  # redis errors: one clean line, not a traceback
        if type(e).__module__.startswith("redis"):
            err.print(f"[red]Redis error at {url}:[/] {e}")
            raise typer.Exit(2) from None
        raise


def _money(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "-"
    if v and abs(v) < 10 ** -digits:
        digits = 8  # never print a real charge as $0.0000
    return f"${v:,.{digits}f}"


def _dump(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
