"""`triage keys|budgets|ledger`: the operator's view of accounting, against the proxy's own Redis.

Redis is found the way the proxy found it: ``--redis-url``, else ``REDIS_URL``,
else the ``redis_url`` of ``--config``, else the embedded server the running
proxy started from the same state directory (``TRIAGE_STATE_DIR``, default
``.triage``). We never start a Redis here: keys written to a private throwaway
server would be lost.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import orjson
import typer
from rich.table import Table

from router.commands.common import (
    ColdOpt,
    ConfigOpt,
    JsonOpt,
    RedisOpt,
    StateOpt,
    _dump,
    _money,
    _run,
    err,
    out,
    resolve_cold,
    resolve_redis_url,
)
from router.commands.extras import require
from router.commands.ledger_compact import register_compact as _register_compact

__all__ = ["register", "resolve_cold", "resolve_redis_url"]

def register(app: typer.Typer) -> None:
    keys = typer.Typer(no_args_is_help=True, help="Virtual API keys (stored hashed).")
    budgets = typer.Typer(no_args_is_help=True, help="Budget policies per tenant/key, optionally per tier or model.")
    ledger = typer.Typer(no_args_is_help=True, help="Cost ledger: reports and exports.")
    app.add_typer(keys, name="keys")
    app.add_typer(budgets, name="budgets")
    app.add_typer(ledger, name="ledger")
    _register_compact(ledger)

    @keys.command("create")
    def keys_create(
        tenant: str = typer.Option(..., "--tenant", help="Tenant the key belongs to."),
        label: Optional[str] = typer.Option(None, "--label"),
        budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0, help="Hard budget for this key."),
        period: str = typer.Option("month", "--period", help="day | month | total"),
        max_cost_per_query: Optional[float] = typer.Option(None, "--max-cost-per-query", min=0),
        as_json: bool = JsonOpt, redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt,
        state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Create a key; the plaintext is printed once and never stored."""
        if period not in ("day", "month", "total"):
            raise typer.BadParameter("period must be day, month or total")
        from accounting import KeyStore  # noqa: PLC0415

        url = resolve_redis_url(redis_url, config, state_dir)
        try:
            plain, info = _run(url, lambda r: KeyStore(r).create(tenant, label, budget_usd, period, max_cost_per_query))
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        if as_json:
            _dump({"key": plain, **info.model_dump(), "budget_usd": budget_usd, "period": period})
            return
        out.print(f"[bold]{plain}[/]")
        err.print(f"key_id {info.key_id}  tenant {info.tenant}"
                  + (f"  budget {_money(budget_usd, 2)}/{period}" if budget_usd is not None else "")
                  + "  (store it now: it is not shown again)")

    @keys.command("list")
    def keys_list(
        tenant: Optional[str] = typer.Option(None, "--tenant"), as_json: bool = JsonOpt,
        redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt, state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """List keys (ids and metadata, never the keys)."""
        from accounting import KeyStore  # noqa: PLC0415

        rows = _run(resolve_redis_url(redis_url, config, state_dir), lambda r: KeyStore(r).list(tenant))
        if as_json:
            _dump([k.model_dump() for k in rows])
            return
        t = Table("key_id", "tenant", "label", "prefix", "created", "max/query", "revoked")
        for k in rows:
            t.add_row(k.key_id, k.tenant, k.label or "", k.prefix + "…", k.created_at,
                      _money(k.max_cost_per_query), "yes" if k.revoked else "")
        out.print(t)

    @keys.command("revoke")
    def keys_revoke(
        key_id: str = typer.Argument(..., help="key_id (k_…) to revoke"),
        redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt, state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Revoke a key (running proxies stop accepting it within seconds)."""
        from accounting import KeyStore  # noqa: PLC0415

        if not _run(resolve_redis_url(redis_url, config, state_dir), lambda r: KeyStore(r).revoke(key_id)):
            err.print(f"[red]No key {key_id}[/]")
            raise typer.Exit(1)
        err.print(f"revoked {key_id}")

    @budgets.command("set")
    def budgets_set(
        limit_usd: float = typer.Option(..., "--limit-usd", "--budget-usd", min=0),
        tenant: Optional[str] = typer.Option(None, "--tenant"),
        key_id: Optional[str] = typer.Option(None, "--key", "--key-id"),
        tier: Optional[str] = typer.Option(None, "--tier", help="Narrow to one tier."),
        model: Optional[str] = typer.Option(None, "--model", help="Narrow to one model."),
        scope: Optional[str] = typer.Option(None, "--scope", help="Full scope, e.g. tenant:acme:tier:deliberate"),
        period: str = typer.Option("month", "--period", help="day | month | total"),
        soft: bool = typer.Option(False, "--soft", help="Only warn, never refuse."),
        soft_pct: Optional[float] = typer.Option(None, "--warn-at", "--soft-pct", help="Warn at this % of the limit."),
        max_cost_per_query: Optional[float] = typer.Option(None, "--max-cost-per-query", min=0,
                                                           help="Tenant default per-query cap."),
        store_prompts: Optional[bool] = typer.Option(None, "--store-prompts/--no-store-prompts",
                                                     help="Tenant opt-in to keep prompt text in the ledger."),
        as_json: bool = JsonOpt, redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt,
        state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Set (replace) the budget policy of one scope."""
        from accounting import BudgetPolicy, BudgetStore, KeyStore  # noqa: PLC0415
        from accounting.budgets import build_scope  # noqa: PLC0415

        if period not in ("day", "month", "total"):
            raise typer.BadParameter("period must be day, month or total")
        try:
            sc = build_scope(scope, tenant, key_id, tier, model)
            pol = BudgetPolicy(scope=sc, limit_usd=limit_usd, period=period, mode=  # type: ignore[arg-type]  # checked above
"soft" if soft else "hard",
                               soft_pct=soft_pct)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

        async def go(r: Any) -> Any:
            bs = BudgetStore(r)
            status = await bs.status(await bs.set(pol))
            if tenant and not tier and not model and (max_cost_per_query is not None or store_prompts is not None):
                status["tenant_settings"] = await KeyStore(r).set_tenant(
                    tenant, store_prompts=store_prompts, max_cost_per_query=max_cost_per_query)
            return status

        status = _run(resolve_redis_url(redis_url, config, state_dir), go)
        if as_json:
            _dump(status)
        else:
            _budget_table([status])

    @budgets.command("show")
    def budgets_show(
        scope: Optional[str] = typer.Option(None, "--scope", help="Only this scope (and narrower ones)."),
        tenant: Optional[str] = typer.Option(None, "--tenant"),
        as_json: bool = JsonOpt, redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt,
        state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Show policies with spend, in-flight reservations and what remains."""
        from accounting import BudgetStore, KeyStore  # noqa: PLC0415

        prefix = scope or (f"tenant:{tenant}" if tenant else None)

        async def go(r: Any) -> list[dict[str, Any]]:
            rows = await BudgetStore(r).show(prefix)
            if tenant and not scope:  # a tenant's view includes the budgets of its keys
                for k in await KeyStore(r).list(tenant):
                    rows += await BudgetStore(r).show(f"key:{k.key_id}")
            return rows

        rows = _run(resolve_redis_url(redis_url, config, state_dir), go)
        if as_json:
            _dump(rows)
        else:
            _budget_table(rows)

    @ledger.command("report")
    def ledger_report(
        tenant: Optional[str] = typer.Option(None, "--tenant", help="Default: every tenant."),
        since: str = typer.Option("7d", "--since", help="7d, 24h, or an ISO date"),
        by: list[str] = typer.Option(["tier"], "--by",
                                     help="key | tenant | tier | model | day | complexity | workflow; repeat or "
                                          "comma-separate to combine (--by tier,model)"),
        as_json: bool = JsonOpt, redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt,
        state_dir: Optional[Path] = StateOpt, cold: Optional[str] = ColdOpt,
    ) -> None:
        """Requests, refusals, cost, quality, cost-per-quality and signed savings against always-top-tier,
        with the savings that shadow runs measured next to the estimated ones."""
        from accounting import reports  # noqa: PLC0415

        cl = resolve_cold(cold, config)
        try:
            dims = reports.parse_by(by)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

        async def go(r: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            return (await reports.report(r, tenant, since, dims, cold=cl),
                    await reports.measured_savings(r, tenant, since))

        rows, meas = _run(resolve_redis_url(redis_url, config, state_dir), go)
        tot = reports.totals(rows)
        meta = reports.report_meta()
        if as_json:
            _dump({"tenant": tenant, "since": since, "by": list(dims), "rows": rows, "totals": tot,
                   "measured": meas, **meta})
            return
        mt = {m["tier"]: m for m in meas["by_tier"]}
        t = Table(*dims, "requests", "refused", "cost", "avg cost", "quality", "rated", "cost/quality",
                  "top-tier cost (est.)", "savings (est.)", "savings (measured, 95% CI/request)",
                  title=f"{tenant or 'all tenants'} since {since}")
        for r in rows:
            m = mt.get(r.get("tier", "")) if dims == ("tier",) else None
            t.add_row(*(str(r[d]) for d in dims), str(r["requests"]), str(r["refused"]), _money(r["cost_usd"]),
                      _money(r["avg_cost_usd"], 6), "-" if r["quality"] is None else f"{r['quality']:.3f}",
                      str(r["rated"]), _money(r["cost_per_quality_usd"], 6), _money(r["counterfactual_usd"]),
                      _money(r["savings_usd"]) + ("" if r["savings_pct"] is None else f" ({r['savings_pct']:.0f}%)"),
                      _measured(m))
        t.add_row("[bold]total[/]", *([""] * (len(dims) - 1)), str(tot["requests"]), str(tot["refused"]),
                  _money(tot["cost_usd"]), _money(tot["avg_cost_usd"], 6), "", "", "",
                  _money(tot["counterfactual_usd"]),
                  _money(tot["savings_usd"]) + ("" if tot["savings_pct"] is None else f" ({tot['savings_pct']:.0f}%)"),
                  "")
        out.print(t)
        out.print(f"saved where cheaper {_money(tot['savings_gained_usd'])}, lost where dearer "
                  f"{_money(tot['savings_lost_usd'])}; refused {tot['refused']} request(s) worth up to "
                  f"{_money(tot['refused_estimate_usd'])}")
        rq = meas["routing"]
        if rq["labelled"]:
            out.print(f"routing on {rq['labelled']} labelled row(s): APGR {rq['apgr'] if rq['apgr'] is None else round(rq['apgr'], 3)}, "
                      f"PGR as routed {rq['pgr'] if rq['pgr'] is None else round(rq['pgr'], 3)}")
        out.print(f"prices: {meta['price_map_version']}. Counterfactual: {meta['counterfactual_method']}")

    @ledger.command("labelled")
    def ledger_labelled(
        tenant: Optional[str] = typer.Option(None, "--tenant", help="Default: every tenant."),
        since: Optional[str] = typer.Option(None, "--since"),
        output: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default stdout)."),
        redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt, state_dir: Optional[Path] = StateOpt,
    ) -> None:
        """Shadow-labelled rows (prompt + label: 1 = the cheap tier fell short) as JSONL for `triage train`."""
        from accounting.evaluation import eval_rows, training_rows  # noqa: PLC0415

        rows = training_rows(_run(resolve_redis_url(redis_url, config, state_dir),
                                  lambda r: eval_rows(r, tenant, since)))
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            output.write_bytes(data)
            err.print(f"wrote {len(rows)} labelled rows to {output}")

    @ledger.command("export")
    def ledger_export(
        fmt: str = typer.Option("jsonl", "--format", help="jsonl | csv | parquet"),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="Default: every tenant."),
        since: Optional[str] = typer.Option(None, "--since"),
        output: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default stdout)."),
        redis_url: Optional[str] = RedisOpt, config: Optional[Path] = ConfigOpt, state_dir: Optional[Path] = StateOpt,
        cold: Optional[str] = ColdOpt,
    ) -> None:
        """One row per request; the format `triage train` reads (prompt is null unless the tenant opted in)."""
        from accounting import reports  # noqa: PLC0415

        if fmt not in ("jsonl", "csv", "parquet"):
            raise typer.BadParameter("format must be jsonl, csv or parquet")
        if fmt == "parquet" and output is None:
            raise typer.BadParameter("parquet needs --out FILE")
        if fmt == "parquet":
            require("parquet", "triage ledger export --format parquet", "pyarrow")
        cl = resolve_cold(cold, config)
        rows = _run(resolve_redis_url(redis_url, config, state_dir),
                    lambda r: reports.export_rows(r, tenant, since, cold=cl))
        data = reports.write_export(rows, fmt, output)
        if data is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            err.print(f"wrote {len(rows)} rows to {output}")


def _measured(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    ci = m["saving_per_request_ci95_usd"]
    s = _money(m["saving_per_request_usd"], 6) + (f" [{_money(ci[0], 6)}, {_money(ci[1], 6)}]" if ci else "")
    return s + f" n={m['samples']}"


def _budget_table(rows: list[dict[str, Any]]) -> None:
    t = Table("scope", "period", "mode", "limit", "spent", "in flight", "remaining", "warn at")
    for r in rows:
        t.add_row(r["scope"], r["period"], r["mode"], _money(r["limit_usd"], 2), _money(r["spent_usd"]),
                  _money(r["reserved_usd"]), _money(r["remaining_usd"]),
                  "-" if r.get("soft_pct") is None else f"{r['soft_pct']:g}%")
    out.print(t)
