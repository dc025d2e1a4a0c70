"""Admin API (master key) for keys, budgets and ledgers; plus /v1/usage and /v1/feedback for client keys.

Not on the hot path, so FastAPI's conveniences are fine here. Errors leave as
ProxyError so they share the OpenAI error shape with everything else.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from accounting import Accountant, BudgetPolicy, Principal, reports
from accounting.budgets import build_scope, check_policy, scope_parts, validate_scope
from accounting.ids import is_request_id
from accounting.models import AccountingUnavailable, TenantMismatch
from accounting.names import MAX_USD, TENANT_RULE, is_key_id, is_tenant
from router.http.errors import ProxyError, bad_request, forbidden, not_found, unauthorized, unavailable

admin_router = APIRouter()
_SCOPE_PREFIX = re.compile(r"(tenant|key):[A-Za-z0-9_.@-]{1,128}(:(tier|model):[^\s{}]{1,200})?")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _token(request: Request) -> str | None:
    h = request.headers.get("authorization")
    if h:
        scheme, _, token = h.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return request.headers.get("api-key") or request.headers.get("x-api-key")


def _accountant(request: Request) -> Accountant:
    return request.app.state.accountant


def _is_master(request: Request, token: str | None) -> bool:
    master = getattr(request.app.state, "master_key", None)
    return bool(token and master and hmac.compare_digest(token.encode(), master.encode()))


def require_master(request: Request) -> None:
    token = _token(request)
    if not token:
        raise unauthorized()
    if not _is_master(request, token):
        raise forbidden("This endpoint needs the master key.")


async def _client(request: Request) -> Principal | None:
    """The caller's principal, or None for the master key (which may act on any tenant)."""
    token = _token(request)
    if not token:
        raise unauthorized()
    if _is_master(request, token):
        return None
    try:
        p = await _accountant(request).authenticate(token)
    except AccountingUnavailable:
        raise unavailable("Key store unavailable; cannot authenticate.", "accounting_unavailable") from None
    if p is None:
        raise unauthorized("Invalid API key.")
    return p


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise bad_request("Request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise bad_request(f"{loc or 'body'}: {err['msg']}", param=loc or None, code="invalid_value") from None


# Strict: a string is not a number, "no" is not a boolean, unknown fields are mistakes, and money is
# finite and bounded. Everything is checked before anything is written.
_STRICT = ConfigDict(extra="forbid", strict=True)
USD = Annotated[float, Field(ge=0, le=MAX_USD, allow_inf_nan=False)]


class KeyCreate(BaseModel):
    model_config = _STRICT
    tenant: str = Field(min_length=1, max_length=128)
    label: str | None = Field(default=None, max_length=200)
    budget_usd: USD | None = None
    period: Literal["day", "month", "total"] = "month"
    max_cost_per_query: USD | None = None


class BudgetSet(BaseModel):
    model_config = _STRICT
    scope: str | None = Field(default=None, max_length=400)
    tenant: str | None = Field(default=None, max_length=128)
    key_id: str | None = Field(default=None, max_length=64)
    tier: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=200)
    limit_usd: USD
    period: Literal["day", "month", "total"] = "month"
    mode: Literal["hard", "soft"] = "hard"
    soft_pct: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    max_cost_per_query: USD | None = None
    store_prompts: bool | None = None


class TenantSettings(BaseModel):
    model_config = _STRICT
    store_prompts: bool | None = None
    max_cost_per_query: USD | None = None


class Feedback(BaseModel):
    model_config = _STRICT
    request_id: str = Field(min_length=1, max_length=128)
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(default=None, max_length=2000)


def _tenant_param(value: str | None, param: str = "tenant") -> str | None:
    if value is None:
        return None
    if not is_tenant(value):
        raise bad_request(f"Invalid tenant name: {TENANT_RULE}.", param=param, code="invalid_tenant")
    return value


async def _known_tenant(acct: Accountant, tenant: str, param: str = "tenant") -> str:
    _tenant_param(tenant, param)
    if not await acct.keys.tenant_exists(tenant):
        raise not_found(f"No tenant '{tenant}'.", param, code="tenant_not_found")
    return tenant


def _check_scope_names(request: Request, scope: str) -> None:
    """A budget on a tier or model the config does not know would never match anything: refuse it."""
    _, _, tier, model = scope_parts(scope)
    st = getattr(request.app.state, "triage", None)
    if st is None:
        return
    cfg = st.snapshot.config
    if tier is not None and tier not in cfg.tiers:
        raise bad_request(f"Unknown tier '{tier}': configured tiers are {', '.join(cfg.tiers)}.", param="tier",
                          code="unknown_tier")
    if model is not None and model not in cfg.model_names:
        raise bad_request(f"Unknown model '{model}': not a model_name in the config.", param="model",
                          code="unknown_model")


@admin_router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    require_master(request)
    body: KeyCreate = await _body(request, KeyCreate)
    _tenant_param(body.tenant)
    try:
        plaintext, info = await _accountant(request).keys.create(
            body.tenant, body.label, body.budget_usd, body.period, body.max_cost_per_query)
    except ValueError as e:
        raise bad_request(str(e), param="tenant") from None
    return _json({"key": plaintext, **info.model_dump()}, 201)


@admin_router.get("/admin/keys")
async def list_keys(request: Request, tenant: str | None = None) -> Response:
    require_master(request)
    _tenant_param(tenant)
    keys = await _accountant(request).keys.list(tenant)
    return _json({"object": "list", "data": [k.model_dump() for k in keys]})


@admin_router.delete("/admin/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> Response:
    require_master(request)
    if not is_key_id(key_id):
        raise bad_request("Invalid key id: expected k_ followed by 16 hex digits.", param="key_id",
                          code="invalid_key_id")
    acct = _accountant(request)
    if not await acct.keys.revoke(key_id):
        raise not_found(f"No key with id '{key_id}'.", "key_id", code="key_not_found")
    acct.invalidate_auth_cache()
    return _json({"key_id": key_id, "revoked": True})


@admin_router.put("/admin/budgets")
async def set_budget(request: Request) -> Response:
    require_master(request)
    b: BudgetSet = await _body(request, BudgetSet)
    acct = _accountant(request)
    try:
        scope = build_scope(b.scope, b.tenant, b.key_id, b.tier, b.model)
        policy = check_policy(BudgetPolicy(scope=scope, limit_usd=b.limit_usd, period=b.period, mode=b.mode,
                                           soft_pct=b.soft_pct))
    except ValueError as e:
        raise bad_request(str(e), param="scope") from None
    _check_scope_names(request, scope)
    try:
        pol = await acct.budgets.set(policy)
    except ValueError as e:  # e.g. a key scope naming a key that does not exist
        raise not_found(str(e), "key_id", code="key_not_found") from None
    out: dict[str, Any] = await acct.budgets.status(pol)
    if b.tenant and not b.tier and not b.model and (b.max_cost_per_query is not None or b.store_prompts is not None):
        out["tenant_settings"] = await acct.keys.set_tenant(
            b.tenant, store_prompts=b.store_prompts, max_cost_per_query=b.max_cost_per_query)
        acct.invalidate_auth_cache()
    return _json(out)


@admin_router.get("/admin/budgets")
async def show_budgets(request: Request, scope: str | None = None) -> Response:
    require_master(request)
    if scope is not None and not _SCOPE_PREFIX.fullmatch(scope):
        raise bad_request("Invalid scope filter.", param="scope", code="invalid_scope")
    return _json({"object": "list", "data": await _accountant(request).budgets.show(scope)})


@admin_router.delete("/admin/budgets")
async def delete_budget(request: Request, scope: str) -> Response:
    require_master(request)
    try:
        validate_scope(scope)
    except ValueError as e:
        raise bad_request(str(e), param="scope", code="invalid_scope") from None
    if not await _accountant(request).budgets.delete(scope):
        raise not_found(f"No budget for scope '{scope}'.", "scope", code="budget_not_found")
    return _json({"scope": scope, "deleted": True})


@admin_router.put("/admin/tenants/{tenant}")
async def set_tenant(request: Request, tenant: str) -> Response:
    require_master(request)
    body: TenantSettings = await _body(request, TenantSettings)
    acct = _accountant(request)
    await _known_tenant(acct, tenant)
    out = await acct.keys.set_tenant(tenant, store_prompts=body.store_prompts,
                                     max_cost_per_query=body.max_cost_per_query)
    acct.invalidate_auth_cache()
    return _json(out)


@admin_router.get("/admin/ledger/report")
async def ledger_report(request: Request, tenant: str | None = None, since: str = "7d", by: str = "tier") -> Response:
    """tenant omitted: every tenant; by: one or more of reports.DIMENSIONS, comma-separated."""
    require_master(request)
    acct = _accountant(request)
    if tenant is not None:
        await _known_tenant(acct, tenant)
    try:
        rows = await reports.report(acct.redis, tenant, since, by, cold=acct.cold)
        measured = await reports.measured_savings(acct.redis, tenant, since)
    except ValueError as e:
        raise bad_request(str(e), param="by") from None
    return _json({"tenant": tenant, "since": since, "by": list(reports.parse_by(by)), "rows": rows,
                  "totals": reports.totals(rows), "measured": measured, **reports.report_meta(acct.prices.version)})


_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


@admin_router.get("/admin/ledger/export")
async def ledger_export(request: Request, tenant: str | None = None, since: str | None = None,
                        format: str = "jsonl") -> Response:
    require_master(request)
    if format not in _MEDIA:
        raise bad_request("format must be jsonl, csv or parquet", param="format")
    if tenant is not None:
        await _known_tenant(_accountant(request), tenant)
    try:
        acct = _accountant(request)
        rows = await reports.export_rows(acct.redis, tenant, since, cold=acct.cold)
    except ValueError as e:
        raise bad_request(str(e), param="since") from None
    try:
        data = reports.write_export(rows, format)
    except reports.MissingExtra as e:
        raise ProxyError(501, str(e), "invalid_request_error", "format_unavailable", "format") from None
    return Response(data, media_type=_MEDIA[format])


async def usage(request: Request) -> Response:
    p = await _client(request)
    tenant = request.query_params.get("tenant") if p is None else p.tenant
    if not tenant:
        raise bad_request("With the master key, pass ?tenant=NAME.", param="tenant")
    if p is None:
        await _known_tenant(_accountant(request), tenant)
    since = request.query_params.get("since", "30d")
    try:
        data = await reports.usage(_accountant(request).redis, tenant, p.key_id if p else None, since)
    except ValueError as e:
        raise bad_request(str(e), param="since") from None
    return _json({"object": "usage", **data})


async def feedback(request: Request) -> Response:
    p = await _client(request)
    body: Feedback = await _body(request, Feedback)
    if body.score is None and body.thumbs is None:
        raise bad_request("Give 'score' (0..1) or 'thumbs' ('up'|'down').", param="score")
    if not is_request_id(body.request_id):
        raise bad_request("'request_id' must be the x-request-id this gateway returned (req_ + 24 hex digits).",
                          param="request_id", code="invalid_request_id")
    acct = _accountant(request)
    tenant = p.tenant if p else None
    if tenant is None:  # master key: rate on behalf of whichever tenant owns the request
        try:
            tenant = await acct.owner_of(body.request_id) or "-"
        except AccountingUnavailable:
            raise unavailable("Ledger unavailable; try again shortly.", "accounting_unavailable") from None
    try:
        ok = await acct.feedback(tenant, body.request_id, body.score, body.comment, thumbs=body.thumbs)
    except TenantMismatch:
        ok = False  # don't reveal that another tenant's request id exists
    except AccountingUnavailable:
        raise unavailable("Ledger unavailable; try again shortly.", "accounting_unavailable") from None
    if not ok:
        raise not_found(f"No request '{body.request_id}' for this tenant.", "request_id", code="request_not_found")
    return _json({"request_id": body.request_id, "recorded": True})


for _path in ("/v1/usage", "/usage"):
    admin_router.add_api_route(_path, usage, methods=["GET"])
for _path in ("/v1/feedback", "/feedback"):
    admin_router.add_api_route(_path, feedback, methods=["POST"])
