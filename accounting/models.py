"""Boundary types shared by the router and the accounting layer.

Money crosses the Redis boundary as integer nano-dollars (``to_nusd``) so that
sums are exact: 100 settlements of $0.01 add up to exactly $1.00, and the Lua
scripts never accumulate float drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

NANO = 1_000_000_000


def to_nusd(usd: float) -> int:
    return int(round(usd * NANO))


def from_nusd(n: int | float | str | bytes | None) -> float:
    if n is None:
        return 0.0
    return int(float(n)) / NANO


def usd_str(n: int) -> str:
    """Exact decimal dollars of an integer nano-USD amount ("0.000011000", "-1.250000000"): no float, no 1e-05."""
    n = int(n)
    sign = "-" if n < 0 else ""
    q, r = divmod(abs(n), NANO)
    return f"{sign}{q}.{r:09d}"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one upstream call, OpenAI semantics.

    ``prompt_tokens`` is the whole prompt, *including* ``cached_tokens`` (cache
    reads) and ``cache_write_tokens``; ``completion_tokens`` includes
    ``reasoning_tokens``. That is how OpenAI and litellm report them.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # of cache_write_tokens, written with a 1-hour lifetime (Anthropic)

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> "Usage":
        if not usage:
            return cls()
        ptd = usage.get("prompt_tokens_details") or {}
        ctd = usage.get("completion_tokens_details") or {}
        cached = ptd.get("cached_tokens") or usage.get("cache_read_input_tokens") or 0
        write = ptd.get("cache_creation_tokens") or usage.get("cache_creation_input_tokens") or 0
        # Anthropic: usage.cache_creation.ephemeral_1h_input_tokens; litellm: prompt_tokens_details.cache_creation_token_details
        cc = usage.get("cache_creation") or ptd.get("cache_creation_token_details") or {}
        w1h = cc.get("ephemeral_1h_input_tokens") if isinstance(cc, dict) else 0
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(cached),
            reasoning_tokens=int(ctd.get("reasoning_tokens") or 0),
            cache_write_tokens=int(write),
            cache_write_1h_tokens=int(w1h or 0),
        )

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )


class PriceSpec(BaseModel):
    """One configured model: its name in the config, the litellm model id, and overrides."""

    name: str
    litellm_model: str | None = None
    model_info: dict[str, Any] = Field(default_factory=dict)


class ModelPrice(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    input: float
    output: float
    cached_input: float
    cache_write: float
    reasoning: float
    source: Literal["litellm", "config", "unpriced"] = "litellm"
    # every token-price key of the row (long-context tiers, service tiers, 1-hour cache writes)
    keys: dict[str, float] = Field(default_factory=dict)

    @property
    def unpriced(self) -> bool:
        return self.source == "unpriced"

    @property
    def worst_rates(self) -> tuple[float, float]:
        """(USD per prompt token, USD per output token) in the worst case: nothing read from cache
        (a cache write may cost more than fresh input), every output token at the dearer of the
        visible and reasoning prices. Every cost bound in the gateway starts here."""
        if self.keys:  # the base band's rates, 1-hour cache writes included (prices.worst_rates adds bands)
            from .rates import resolve  # noqa: PLC0415

            r = resolve(self.keys, 0, None)
            return r.worst_input(), r.worst_output()
        return max(self.input, self.cache_write), max(self.output, self.reasoning)


class Principal(BaseModel):
    key_id: str
    tenant: str
    label: str | None = None
    max_cost_per_query: float | None = None
    store_prompts: bool = False


class KeyInfo(BaseModel):
    key_id: str
    tenant: str
    label: str | None = None
    created_at: str
    revoked: bool = False
    max_cost_per_query: float | None = None
    prefix: str = ""  # first chars of the plaintext, for humans to recognise a key


Period = Literal["day", "month", "total"]


class BudgetPolicy(BaseModel):
    scope: str  # e.g. "tenant:acme", "key:k_123", "tenant:acme:tier:deliberate", "key:k_1:model:big"
    limit_usd: float
    period: Period = "month"
    mode: Literal["hard", "soft"] = "hard"
    soft_pct: float | None = None  # warn once spend reaches this percentage of the limit


# Built on every request and never read from outside the process: plain dataclasses, no validation.
@dataclass(slots=True)
class PlanEstimate:
    tier: str
    model: str
    estimate_usd: float


@dataclass(kw_only=True, slots=True)
class Admission:
    request_id: str
    plan_index: int
    reserved_usd: float
    remaining_usd: float | None = None
    soft_warnings: list[str] = field(default_factory=list)
    failed_open: bool = False
    # bookkeeping the settle script needs to release exactly what admit held
    tenant: str = ""
    key_id: str = ""
    tier: str = ""
    model: str = ""
    held_scopes: list[str] = field(default_factory=list)
    reserved_nusd: int = 0
    store_prompts: bool = False
    workflow_scope: str | None = None  # a workflow's budget (x-triage-workflow-max-cost), charged at settle


Hop = Literal["primary", "retry", "fallback"]


# Records are built on every request and read back rarely, so they are plain dataclasses: building one
# costs no validation and orjson writes it from its fields. Their fields are the one schema of a ledger
# row; `LedgerRecord.from_dict` validates a stored row against the same fields through pydantic. Not
# slotted: orjson writes a dataclass's __dict__ directly, 2-3x faster than reading slots one by one
# (mypy, not slots, keeps stray attributes out).
@dataclass(kw_only=True)
class UpstreamCall:
    model: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    service_tier: str | None = None  # priced at this service tier (priority/flex), None = standard
    cost_usd: float = 0.0
    cost_nusd: int | None = None  # integer nano-USD: what every total is summed from (set at settle)
    latency_ms: float | None = None
    status: str = "ok"  # "ok" | "error" | "cancelled" | http status text
    hop: Hop = "primary"
    estimated: bool = False  # usage was estimated with a tokenizer (no usage from upstream)
    # a failed attempt the provider most likely billed (timeout after generation, body cut, bad JSON):
    # recorded at its best estimate instead of $0
    billed_failure: bool = False

    def nusd(self) -> int:
        return self.cost_nusd if self.cost_nusd is not None else to_nusd(self.cost_usd)

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.reasoning_tokens,
                     self.cache_write_tokens, self.cache_write_1h_tokens)


@dataclass(kw_only=True)
class LedgerRecord:
    request_id: str  # the gateway's own id: the ledger's and idempotency's key
    client_request_id: str | None = None  # the caller's x-request-id, recorded for their correlation only
    key_id: str
    tenant: str
    virtual_model: str = ""
    tier: str = ""
    model: str = ""  # model that produced the answer
    complexity: float | None = None
    reason: str = ""
    # signals, candidate tiers with estimates, why each was rejected: the "why" behind the bill
    decision: dict[str, Any] | None = None
    calls: list[UpstreamCall] = field(default_factory=list)
    cost_usd: float | None = None  # None: sum of calls; after settle always cost_nusd / 1e9
    counterfactual_cost_usd: float | None = None  # None: computed from the top model if configured
    cost_nusd: int | None = None  # the exact charge; every figure (header, report, export) derives from it
    counterfactual_nusd: int | None = None
    # how the counterfactual was made: "top-tier-plan:learned" (top tier's full plan, output length
    # learned from the ledger), "top-tier-plan:default" (documented fallback), "top-tier" (the request
    # ran on the top tier: counterfactual = its own cost), "measured" (a shadow run on the top tier)
    counterfactual_method: str | None = None
    kind: Literal["request", "refusal", "evaluation"] = "request"
    workflow: str = ""  # client label for reports (x-triage-workflow), scoped to the tenant
    workflow_step: str = ""  # the step's name (x-triage-step)
    # the step's place in its workflow and the context earlier steps already sent (accounting/workflows.py)
    workflow_depth: int | None = None
    redundant_tokens: int | None = None
    redundant_nusd: int | None = None
    cache_hit: bool = False  # answered from the response cache: no upstream call, cost 0
    cache_saved_nusd: int | None = None  # what the cached answer cost when it was made
    refused_estimate_nusd: int | None = None  # refusals: the worst case that did not fit
    evaluation: dict[str, Any] | None = None  # shadow rows: the labelled comparison
    client_prompt_tokens: int | None = None  # top-tier rows: the client's prompt, counted (counterfactual learning)
    ttft_ms: float | None = None
    latency_ms: float | None = None
    streamed: bool = False
    partial: bool = False
    estimated: bool = False
    status: str = "ok"
    prompt: str | None = None  # dropped unless the tenant opted in
    ts: float | None = None  # unix seconds; set at settle when missing

    def total_usage(self) -> Usage:
        pt = ct = cached = rt = cw = cw1h = 0
        for c in self.calls:
            pt += c.prompt_tokens
            ct += c.completion_tokens
            cached += c.cached_tokens
            rt += c.reasoning_tokens
            cw += c.cache_write_tokens
            cw1h += c.cache_write_1h_tokens
        return Usage(pt, ct, cached, rt, cw, cw1h)

    def to_json(self) -> bytes:
        """The ledger row: every field, in declaration order."""
        return orjson.dumps(self, default=_json_default)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "LedgerRecord":
        """A stored row, validated (types coerced, unknown fields ignored) against the fields above."""
        global _record_adapter
        if _record_adapter is None:
            _record_adapter = TypeAdapter(cls)
        return _record_adapter.validate_python(row)


_record_adapter: TypeAdapter[LedgerRecord] | None = None


def _json_default(v: Any) -> Any:
    """What orjson leaves to us inside free-form fields (decision, evaluation), written as pydantic wrote it."""
    if isinstance(v, float):  # a float subclass (numpy's float64)
        return float(v)
    if isinstance(v, set | frozenset):
        return list(v)
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def usd(x: float) -> str:
    """Dollars with as many decimals as the amount needs (to the nano-dollar): a $0.003 limit must
    not print as $0.00."""
    s = f"{x:.9f}".rstrip("0")
    whole, _, frac = s.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


class BudgetExceeded(Exception):
    """A refusal. ``retryable``: only holds of requests in flight stand in the way (they settle, and
    usually for less than they held); otherwise money already spent does, and retrying cannot help."""

    def __init__(self, scope: str, remaining_usd: float, limit_usd: float, message: str | None = None, *,
                 spent_usd: float | None = None, held_usd: float = 0.0, retryable: bool = False):
        self.scope = scope
        self.remaining_usd = remaining_usd
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.held_usd = held_usd
        self.retryable = retryable
        self.message = message or (
            f"Budget exceeded for {scope}: {usd(remaining_usd)} remaining of {usd(limit_usd)}."
        )
        super().__init__(self.message)


class AccountingUnavailable(Exception):
    """Redis is unreachable and admission policy is fail-closed."""


class TenantMismatch(PermissionError):
    """A key tried to read or rate another tenant's record."""
