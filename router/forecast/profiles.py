"""What a request costs on each tier, learned from the ledger.

A tier's *profile* in a complexity bucket is the average shape of its requests
there, normalised by the client's prompt so it transfers to other prompts:
`in_mult` (prompt tokens sent upstream per client prompt token: agents,
rounds, quoted answers, think prompts), visible and reasoning output tokens per
request, the cached share of input, and which models carried the tokens. Cost
under another policy reprices the same shape at that policy's models.

Where a bucket has no requests on a tier, the tier's all-bucket profile is
used; where the tier never ran, the profile comes from the plan's structure
(`structural`), and every figure built on it is marked estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

BUCKETS = 5  # complexity in [0, 1] -> 0..4


def bucket(complexity: float | None) -> int:
    c = 0.0 if complexity is None else min(max(float(complexity), 0.0), 1.0)
    return min(int(c * BUCKETS), BUCKETS - 1)


def bucket_label(b: int) -> str:
    return f"{b / BUCKETS:.1f}-{(b + 1) / BUCKETS:.1f}"


@dataclass
class Profile:
    """Per-request averages of one tier (in one bucket, or all)."""

    n: int = 0
    in_mult: float = 1.0             # upstream prompt tokens / client prompt tokens
    out: float = 0.0                 # visible completion tokens per request
    reasoning: float = 0.0           # reasoning (thinking) tokens per request
    cached_share: float = 0.0        # cached / prompt tokens
    calls: float = 1.0               # upstream calls per request
    models: dict[str, float] = field(default_factory=dict)  # model -> share of the request's tokens
    ms_per_out_token: float | None = None
    source: str = "learned"          # learned | learned:tier | structural

    @property
    def measured(self) -> bool:
        return self.source.startswith("learned")


@dataclass
class _Acc:
    n: int = 0
    in_mult: float = 0.0
    out: float = 0.0
    reasoning: float = 0.0
    prompt: float = 0.0
    cached: float = 0.0
    calls: float = 0.0
    models: dict[str, float] = field(default_factory=dict)
    ms: float = 0.0
    ms_tokens: float = 0.0

    def add(self, row: "Row") -> None:
        self.n += 1
        sent = sum(c["prompt_tokens"] for c in row.calls)
        self.in_mult += sent / max(row.client_prompt, 1)
        self.out += sum(c["completion_tokens"] - c["reasoning_tokens"] for c in row.calls)
        self.reasoning += sum(c["reasoning_tokens"] for c in row.calls)
        self.prompt += sent
        self.cached += sum(c["cached_tokens"] for c in row.calls)
        self.calls += len(row.calls)
        total = sum(c["prompt_tokens"] + c["completion_tokens"] for c in row.calls) or 1
        for c in row.calls:
            self.models[c["model"]] = self.models.get(c["model"], 0.0) + (c["prompt_tokens"] + c["completion_tokens"]) / total
        if row.latency_ms and not row.streamed_partial:
            toks = sum(c["completion_tokens"] for c in row.calls)
            if toks:
                self.ms += row.latency_ms
                self.ms_tokens += toks

    def profile(self, source: str) -> Profile:
        n = max(self.n, 1)
        return Profile(n=self.n, in_mult=self.in_mult / n, out=self.out / n, reasoning=self.reasoning / n,
                       cached_share=(self.cached / self.prompt) if self.prompt else 0.0, calls=self.calls / n,
                       models={m: s / n for m, s in self.models.items()},
                       ms_per_out_token=(self.ms / self.ms_tokens) if self.ms_tokens else None, source=source)


@dataclass
class Row:
    """One ledger request, reduced to what the forecast needs."""

    request_id: str
    tier: str
    complexity: float
    client_prompt: int                # the client's prompt tokens (smallest prompt any call sent)
    calls: list[dict[str, Any]]
    cost_usd: float
    quality: float | None = None
    cap_usd: float | None = None
    ts: float | None = None
    latency_ms: float | None = None
    streamed_partial: bool = False


_CALL_KEYS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


def rows_from_export(export: Iterable[dict[str, Any]]) -> list[Row]:
    """Ledger rows as `accounting.reports.export_rows` (or `triage ledger export --format jsonl`) gives them.
    Refusals, evaluation rows and failed requests carry no usage shape and are skipped."""
    out: list[Row] = []
    for r in export:
        if (r.get("kind") or "request") != "request" or r.get("status") not in (None, "ok"):
            continue
        calls = r.get("calls")
        if isinstance(calls, (str, bytes)):
            calls = orjson.loads(calls)
        calls = [{"model": c.get("model", ""), **{k: int(c.get(k) or 0) for k in _CALL_KEYS}}
                 for c in (calls or []) if (c.get("status") or "ok") == "ok"]
        if not calls or not r.get("tier"):
            continue
        ts = r.get("ts")
        if isinstance(ts, str):
            from datetime import datetime  # noqa: PLC0415 - only for exported ISO timestamps
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        out.append(Row(
            request_id=str(r.get("request_id")), tier=str(r["tier"]), complexity=float(r.get("complexity") or 0.0),
            client_prompt=max(min(c["prompt_tokens"] for c in calls), 1), calls=calls,
            cost_usd=float(r.get("cost_usd") or 0.0), quality=r.get("quality"), cap_usd=r.get("cap_usd"),
            ts=ts, latency_ms=r.get("latency_ms"), streamed_partial=bool(r.get("partial")),
        ))
    return out


class Profiles:
    """Learned profiles and quality by tier x complexity bucket."""

    def __init__(self, rows: Iterable[Row]):
        acc: dict[tuple[str, int | None], _Acc] = {}
        q: dict[tuple[str, int | None], list[float]] = {}
        for r in rows:
            b = bucket(r.complexity)
            for key in ((r.tier, b), (r.tier, None)):
                acc.setdefault(key, _Acc()).add(r)
                if r.quality is not None:
                    q.setdefault(key, []).append(float(r.quality))
        self._profiles = {k: a.profile("learned" if k[1] is not None else "learned:tier") for k, a in acc.items()}
        self._quality = q

    def tiers_seen(self) -> list[str]:
        return sorted({t for t, b in self._profiles if b is None})

    def get(self, tier: str, complexity: float) -> Profile | None:
        return self._profiles.get((tier, bucket(complexity))) or self._profiles.get((tier, None))

    def quality(self, tier: str, complexity: float) -> tuple[float | None, int]:
        """Mean feedback quality of the tier in this bucket (else the tier overall), and how many ratings."""
        for key in ((tier, bucket(complexity)), (tier, None)):
            vals = self._quality.get(key)
            if vals:
                return sum(vals) / len(vals), len(vals)
        return None, 0

    def ms_per_out_token(self, tier: str) -> float | None:
        p = self._profiles.get((tier, None))
        return p.ms_per_out_token if p else None
