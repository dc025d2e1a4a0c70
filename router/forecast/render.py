"""The forecast as a table, JSON and a cost-against-quality plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _usd(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "$0"
    if abs(v) >= 1000:
        return f"${v:,.0f}"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    return f"${v:.6f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def policies_table(console: Console, forecast: dict[str, Any]) -> None:
    t = Table(title=f"Forecast over {forecast['requests']} requests"
                    + (f" at {forecast['qps']:.3g} QPS ({forecast['qps_source']})" if forecast["qps"] else ""))
    for col in ("policy", "requests per tier", "per 1k req", "±95%", "monthly", "annual", "quality", "Δ vs current",
                "measured"):
        t.add_column(col, overflow="fold")
    for p in forecast["policies"]:
        tiers = ", ".join(f"{k} {v}" for k, v in p["by_tier"].items()) + (f", refused {p['refused']}" if p["refused"] else "")
        q = "-" if p["expected_quality"] is None else f"{p['expected_quality']:.3f} ({p['quality_coverage'] * 100:.0f}%)"
        ci = p["cost_per_request_ci95_usd"]
        t.add_row(f"{p['policy']}\n[dim]{p['settings']}[/dim]", tiers, _usd(p["cost_per_1k_usd"]),
                  "-" if ci != ci else _usd(ci * 1000), _usd(p["monthly_usd"]), _usd(p["annual_usd"]), q,
                  _pct(p.get("delta_vs_current")), f"{p['measured_share'] * 100:.0f}%")
    console.print(t)
    for line in forecast["assumptions"]:
        console.print(f"- {line}")


def sweep_table(console: Console, sweep: dict[str, Any]) -> None:
    t = Table(title=f"Reasoning depth on the {sweep['tier']} tier ({sweep['step_tokens']} thinking tokens per step)")
    for col in ("K steps", "thinking tokens", "cost/query", "latency", "annual", "× K=1"):
        t.add_column(col)
    for r in sweep["rows"]:
        t.add_row(str(r["depth_steps"]), str(r["thinking_tokens"]), _usd(r["cost_per_query_usd"]), f"{r['latency_s']:.2f} s",
                  _usd(r["annual_usd"]), "-" if r["multiplier_vs_k1"] is None else f"{r['multiplier_vs_k1']:.2f}×")
    console.print(t)
    console.print(sweep["formula"])


def plot(forecast: dict[str, Any], path: Path) -> Path:
    """Cost per 1k requests against expected quality, one point per policy (needs the `train` extra)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise RuntimeError("the plot needs matplotlib: pip install 'triage-gateway[train]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for p in forecast["policies"]:
        y = p["expected_quality"]
        ax.scatter(p["cost_per_1k_usd"], y if y is not None else 0, s=60, marker="o" if y is not None else "x")
        ax.annotate(p["policy"], (p["cost_per_1k_usd"], y if y is not None else 0), textcoords="offset points",
                    xytext=(6, 4), fontsize=9)
    ax.set_xlabel("cost per 1k requests (USD)")
    ax.set_ylabel("expected quality (feedback; x = no feedback)")
    ax.set_title("Policies: cost against expected quality")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
