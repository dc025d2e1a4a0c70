"""Configuration: a LiteLLM proxy config as it is, plus (optionally) Triage's `tiers`.

LiteLLM's own sections are mapped or named as ignored by router/litellm_compat.py;
without `tiers`, tiers are derived from the model list and its prices.

Validated with pydantic once at load; errors name the file, the path inside it
and the reason, so a typo is a one-line fix rather than a stack trace.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from accounting import AccountingSettings
from router.observe.settings import ObservabilitySpec
from router.tiers.base import TierConfig
from router.tiers.registry import CONFIG_MODELS, TIER_NAMES, VIRTUAL_MODELS

log = logging.getLogger("triage.config")

# Derived from the tier registry; kept here because callers read them from the config module.
TIERS: tuple[str, ...] = TIER_NAMES
__all__ = ["TIERS", "VIRTUAL_MODELS", "TierConfig", "TriageConfig", "ConfigError", "ModelEntry"]

# Providers whose API is OpenAI's wire format: they go through the pooled HTTP
# client. Everything else goes through litellm. Default bases are for when
# the config names the provider but not api_base.
OPENAI_COMPATIBLE: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "custom_openai": None,
    "hosted_vllm": None,
    "vllm": None,
    "sglang": None,
    "lm_studio": None,
    "ollama_chat": "http://127.0.0.1:11434/v1",
    "together_ai": "https://api.together.xyz/v1",
    "groq": "https://api.groq.com/openai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "mistral": "https://api.mistral.ai/v1",
    "xai": "https://api.x.ai/v1",
    "perplexity": "https://api.perplexity.ai",
}



class ConfigError(ValueError):
    pass


def resolve_env(value: Any, path: str = "") -> Any:
    """LiteLLM's `os.environ/VAR` references, resolved once at load."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        var = value.split("/", 1)[1]
        if var not in os.environ:
            raise ConfigError(f"{path}: environment variable {var} is not set")
        return os.environ[var]
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


class LiteLLMParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    api_base: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    api_version: str | None = None
    timeout: float = 60.0
    stream_timeout: float | None = None
    max_retries: int | None = None
    reasoning_effort: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    cache_read_input_token_cost: float | None = None
    cache_creation_input_token_cost: float | None = None
    max_output_tokens: int | None = None
    supports_reasoning: bool | None = None


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow")
    model_name: str
    litellm_params: LiteLLMParams
    model_info: ModelInfo = Field(default_factory=ModelInfo)

    @property
    def provider(self) -> str:
        return self.litellm_params.model.split("/", 1)[0] if "/" in self.litellm_params.model else "openai"

    @property
    def upstream_model(self) -> str:
        m = self.litellm_params.model
        return m.split("/", 1)[1] if "/" in m else m

    @property
    def openai_compatible(self) -> bool:
        return self.provider in OPENAI_COMPATIBLE


# `tiers:` has one optional section per registered tier, each validated by that tier's own model, so
# errors read `tiers.fast.strategy: Extra inputs are not permitted` and an unknown tier is rejected too.
_TiersSpec = create_model(  # type: ignore[call-overload]
    "TiersSpec", __config__=ConfigDict(extra="forbid"),
    **{name: (model | None, None) for name, model in CONFIG_MODELS.items()},
)


def _present(spec: BaseModel) -> dict[str, TierConfig]:
    return {name: getattr(spec, name) for name in TIER_NAMES if getattr(spec, name) is not None}


if TYPE_CHECKING:
    TiersField = dict[str, TierConfig]
else:
    TiersField = Annotated[_TiersSpec, AfterValidator(_present)]


class PolicySpec(BaseModel):
    """Thresholds and targets; reloadable without restart."""

    model_config = ConfigDict(extra="forbid")
    # Complexity at or above which the next tier is preferred; None = use the classifier's stored thresholds.
    reasoning_threshold: float | None = Field(default=None, ge=0, le=1)
    deliberate_threshold: float | None = Field(default=None, ge=0, le=1)
    allow_downgrade: bool = True
    default_max_tokens: int = Field(default=1024, ge=1)
    session_ttl_s: int = Field(default=1800, ge=1)


class ServerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # chat completions
    max_admin_body_bytes: int = Field(default=64 * 1024, ge=1024)  # every other route (feedback, admin)
    # A body announced but not sent in this long is refused (408) and its connection closed.
    body_read_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    openapi: bool = True  # publish /openapi.json


def _acct_default(name: str) -> Any:
    return AccountingSettings.model_fields[name].default


class AccountingSpec(BaseModel):
    """`accounting:` in the config. The Redis knobs default to values that hold on a loaded 2-core host:
    a slow Redis is waited for; only one that refuses or never answers fails admission (closed)."""

    model_config = ConfigDict(extra="allow")
    admission_on_redis_error: Literal["closed", "open"] = "closed"
    settle_unpriced_at_estimate: bool = False
    ledger_retention_days: int = Field(default=90, ge=1)
    # The cold ledger (pip install 'triage-gateway[cold]'): entries settled more than cold_after_days ago
    # move from Redis to Parquet under cold_ledger_url (a directory or fsspec URL such as s3://bucket/x).
    # cold_compact_every_s > 0 runs that compaction inside `serve`, one compactor per tenant at a time.
    cold_ledger_url: str | None = None
    cold_after_days: float = Field(default=30, ge=0)
    cold_compact_every_s: float = Field(default=0, ge=0)
    spool_dir: str | None = None
    redis_timeout_s: float = Field(default=_acct_default("redis_timeout_s"), gt=0, le=300)
    connect_timeout_s: float = Field(default=_acct_default("connect_timeout_s"), gt=0, le=300)
    connection_retries: int = Field(default=_acct_default("connection_retries"), ge=0, le=10)
    health_check_interval_s: float = Field(default=_acct_default("health_check_interval_s"), ge=0)
    max_connections: int = Field(default=_acct_default("max_connections"), ge=1)
    pool_wait_s: float = Field(default=_acct_default("pool_wait_s"), gt=0, le=300)
    breaker_threshold: int = Field(default=_acct_default("breaker_threshold"), ge=1)
    hold_wait_s: float = Field(default=_acct_default("hold_wait_s"), ge=0, le=60)
    auth_sync_interval_s: float = Field(default=_acct_default("auth_sync_interval_s"), gt=0, le=60)
    auth_cache_ttl_s: float = Field(default=_acct_default("auth_cache_ttl_s"), ge=0, le=60)


class ShadowTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(default=0.0, ge=0, le=1)
    budget_usd: float = Field(default=0.0, ge=0)  # evaluation spend per UTC month


class ShadowSpec(BaseModel):
    """`shadow:` — shadow sampling (router/shadow.py). Off unless a tenant gets a rate and a budget."""

    model_config = ConfigDict(extra="forbid")
    rate: float = Field(default=0.0, ge=0, le=1)          # every tenant's default sample rate
    budget_usd: float = Field(default=0.0, ge=0)          # every tenant's default monthly evaluation budget
    tenants: dict[str, ShadowTenant] = Field(default_factory=dict)
    judge_model: str | None = None                        # a model_name; None: rows wait for feedback

    def for_tenant(self, tenant: str) -> tuple[float, float]:
        t = self.tenants.get(tenant)
        return (t.rate, t.budget_usd) if t is not None else (self.rate, self.budget_usd)


class TenantClassifierSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None


class ClassifierSpec(BaseModel):
    """Which complexity artifact scores requests (router/classifiers.py); reloadable."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None        # artifact path; None = the shipped one
    tenants: dict[str, TenantClassifierSpec] = Field(default_factory=dict)
    store: str | None = None        # folder `triage classifier promote/rollback` manage


class CacheSpec(BaseModel):
    """`cache:` exact-match response cache (per tenant, in Redis) with single flight across workers."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    temperature_zero: bool = True      # temperature 0 counts as an opt-in (others opt in per request)
    ttl_s: int = Field(default=3600, ge=1, le=30 * 86400)
    max_entries: int = Field(default=10_000, ge=1)        # per tenant; the oldest go first
    max_entry_bytes: int = Field(default=256 * 1024, ge=1)
    single_flight_wait_s: float = Field(default=30.0, gt=0, le=600)


class WorkflowSpec(BaseModel):
    """`workflows:` multi-step workflows (x-triage-workflow)."""

    model_config = ConfigDict(extra="forbid")
    ttl_days: float = Field(default=7, gt=0, le=365)       # an idle workflow's state is forgotten after this
    default_max_cost_usd: float | None = Field(default=None, gt=0)  # a cap for every workflow without its own
    affinity: bool = True              # steps of a workflow stay on one deployment so prompt caches hit


class TriageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_list: list[ModelEntry] = Field(min_length=1)
    tiers: TiersField
    redis_url: str | None = None
    # Alternatives to a redis+sentinel:// / redis+cluster:// URL: a list of host:port and, for Sentinel,
    # the master's service name. Turned into that URL at load, so one code path serves all of them.
    redis_sentinels: list[str] | None = None
    redis_sentinel_service: str | None = None
    redis_cluster_nodes: list[str] | None = None
    master_key: str | None = Field(default=None, repr=False)
    policy: PolicySpec = Field(default_factory=PolicySpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    accounting: AccountingSpec = Field(default_factory=AccountingSpec)
    observability: ObservabilitySpec = Field(default_factory=ObservabilitySpec)
    shadow: ShadowSpec = Field(default_factory=ShadowSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    workflows: WorkflowSpec = Field(default_factory=WorkflowSpec)
    # From LiteLLM's router_settings / litellm_settings (or set here directly).
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    num_retries: int | None = Field(default=None, ge=0, le=10)
    drop_params: bool = True
    classifier: ClassifierSpec = Field(default_factory=ClassifierSpec)
    source: str = "<embedded defaults>"
    derived: str | None = None         # what tier derivation chose, when the config had no `tiers`
    ignored: list[str] = Field(default_factory=list)  # LiteLLM settings with no Triage meaning

    @field_validator("tiers")
    @classmethod
    def _fast_required(cls, v: dict[str, TierConfig]) -> dict[str, TierConfig]:
        if "fast" not in v:
            raise ValueError("a 'fast' tier is required: it is the floor every query can fall back to")
        return v

    @model_validator(mode="after")
    def _redis_topology(self) -> "TriageConfig":
        from accounting.redis_client import cluster_url, parse_redis_url, sentinel_url  # noqa: PLC0415

        if self.redis_sentinels and self.redis_cluster_nodes:
            raise ValueError("give redis_sentinels or redis_cluster_nodes, not both")
        if self.redis_sentinels:
            if not self.redis_sentinel_service:
                raise ValueError("redis_sentinels needs redis_sentinel_service (the master's name)")
            self.redis_url = sentinel_url(self.redis_sentinels, self.redis_sentinel_service)
        elif self.redis_cluster_nodes:
            self.redis_url = cluster_url(self.redis_cluster_nodes)
        if self.redis_url:
            try:
                parse_redis_url(self.redis_url)
            except ValueError as e:
                raise ValueError(f"redis_url: {e}") from None
        return self

    @model_validator(mode="after")
    def _tiers_reference_models(self) -> "TriageConfig":
        names = {m.model_name for m in self.model_list}
        if self.shadow.judge_model and self.shadow.judge_model not in names:
            raise ValueError(f"shadow.judge_model: '{self.shadow.judge_model}' is not a model_name in model_list")
        for tier, spec in self.tiers.items():
            for path, name in spec.referenced_models().items():
                if name not in names:
                    raise ValueError(f"tiers.{tier}.{path}: '{name}' is not a model_name in model_list")
            problem = spec.check_tiers(self.tiers)
            if problem:
                raise ValueError(f"tiers.{tier}.{problem}")
        for src, dsts in self.fallbacks.items():
            for d in ([] if src == "*" else [src]) + list(dsts):  # "*": LiteLLM's default fallbacks
                if d not in names:
                    raise ValueError(f"fallbacks: '{d}' is not a model_name in model_list")
        for spec in self.tiers.values():
            if not spec.fallbacks:  # a tier's own list wins over LiteLLM's per-model ones
                spec.fallbacks = [m for m in self.chain(spec.models) if m not in spec.models]
        return self

    def chain(self, models: list[str]) -> list[str]:
        """Models in order, then their configured fallbacks (LiteLLM's `fallbacks`), each once."""
        out = list(dict.fromkeys(models))
        for m in list(out):
            out.extend(f for f in self.fallbacks.get(m, ()) if f not in out)
        out.extend(f for f in self.fallbacks.get("*", ()) if f not in out)
        return out

    def entries(self, name: str) -> list[ModelEntry]:
        """All deployments of a model_name (LiteLLM allows several per alias)."""
        return [m for m in self.model_list if m.model_name == name]

    @property
    def model_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.model_list:
            seen.setdefault(m.model_name, None)
        return list(seen)

    # ---- loading -------------------------------------------------------

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], source: str) -> "TriageConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping")
        from router import litellm_compat  # noqa: PLC0415 - load time only

        raw = dict(raw)
        ignored = litellm_compat.absorb(raw)
        for key in list(raw):
            if key not in cls.model_fields or key in ("source", "derived", "ignored"):
                ignored.append(key)
                raw.pop(key)
        if ignored:
            log.warning("%s: LiteLLM settings Triage ignores: %s", source, ", ".join(ignored))
        try:
            raw = resolve_env(raw)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        raw["source"] = source
        raw["ignored"] = ignored
        if "tiers" not in raw and isinstance(raw.get("model_list"), list):
            raw["tiers"], raw["derived"] = litellm_compat.derive_tiers(raw["model_list"])
            log.info("%s: %s", source, raw["derived"])
        if raw.get("master_key") is None and os.environ.get("TRIAGE_MASTER_KEY"):
            raw["master_key"] = os.environ["TRIAGE_MASTER_KEY"]
        if raw.get("redis_url") is None and os.environ.get("REDIS_URL"):
            raw["redis_url"] = os.environ["REDIS_URL"]
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            lines = []
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "<root>"
                lines.append(f"{source}: {loc}: {err['msg']}")
            raise ConfigError("\n".join(lines)) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, defaults_upstream: str | None = None) -> "TriageConfig":
        if path is None:
            from router.defaults import default_config_mapping  # noqa: PLC0415 - startup only

            return cls.from_mapping(default_config_mapping(defaults_upstream or "http://127.0.0.1:0/v1"), "<embedded defaults>")
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        return cls.from_mapping(raw, str(p))
