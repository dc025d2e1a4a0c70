"""Admin API (master key) for keys, budgets and ledgers; plus /v1/usage and /v1/feedback for client keys.

Not on the hot path, so FastAPI's conveniences are fine here. Errors leave as
ProxyError so they share the OpenAI error shape with everything else.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from accounting import Accountant, BudgetPolicy, Principal
from accounting import reports
from accounting.budgets import build_scope
from accounting.ids import is_request_id
from accounting.models import AccountingUnavailable, TenantMismatch
from router.http.errors import bad_request, forbidden, not_found, unauthorized, unavailable

admin_router = APIRouter()


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
    try:
        return model.model_validate(orjson.loads(await request.body() or b"{}"))
    except orjson.JSONDecodeError:
        raise bad_request("Request body is not valid JSON.", code="invalid_json") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise bad_request(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}", param=str(err["loc"][0])) from None


class KeyCreate(BaseModel):
    tenant: str = Field(min_length=1, max_length=128)
    label: str | None = None
    budget_usd: float | None = Field(default=None, ge=0)
    period: Literal["day", "month", "total"] = "month"
    max_cost_per_query: float | None = Field(default=None, ge=0)


class BudgetSet(BaseModel):
    scope: str | None = None
    tenant: str | None = None
    key_id: str | None = None
    tier: str | None = None
    model: str | None = None
    limit_usd: float = Field(ge=0)
    period: Literal["day", "month", "total"] = "month"
    mode: Literal["hard", "soft"] = "hard"
    soft_pct: float | None = Field(default=None, gt=0, le=100)
    max_cost_per_query: float | None = Field(default=None, ge=0)
    store_prompts: bool | None = None


class Feedback(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    score: float | None = Field(default=None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(default=None, max_length=2000)


@admin_router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    require_master(request)
    body: KeyCreate = await _body(request, KeyCreate)
    try:
        plaintext, info = await _accountant(request).keys.create(
            body.tenant, body.label, body.budget_usd, body.period, body.max_cost_per_query)
    except ValueError as e:
        raise bad_request(str(e), param="tenant") from None
    return _json({"key": plaintext, **info.model_dump()}, 201)


@admin_router.get("/admin/keys")
async def list_keys(request: Request, tenant: str | None = None) -> Response:
    require_master(request)
    keys = await _accountant(request).keys.list(tenant)
    return _json({"object": "list", "data": [k.model_dump() for k in keys]})


@admin_router.delete("/admin/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> Response:
    require_master(request)
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
        pol = await acct.budgets.set(BudgetPolicy(scope=scope, limit_usd=b.limit_usd, period=b.period,
                                                  mode=b.mode, soft_pct=b.soft_pct))
    except ValueError as e:
        raise bad_request(str(e), param="scope") from None
    out: dict[str, Any] = await acct.budgets.status(pol)
    if b.tenant and not b.tier and not b.model and (b.max_cost_per_query is not None or b.store_prompts is not None):
        out["tenant_settings"] = await acct.keys.set_tenant(
            b.tenant, store_prompts=b.store_prompts, max_cost_per_query=b.max_cost_per_query)
        acct.invalidate_auth_cache()
    return _json(out)


@admin_router.get("/admin/budgets")
async def show_budgets(request: Request, scope: str | None = None) -> Response:
    require_master(request)
    return _json({"object": "list", "data": await _accountant(request).budgets.show(scope)})


@admin_router.delete("/admin/budgets")
async def delete_budget(request: Request, scope: str) -> Response:
    require_master(request)
    if not await _accountant(request).budgets.delete(scope):
        raise not_found(f"No budget for scope '{scope}'.", "scope", code="budget_not_found")
    return _json({"scope": scope, "deleted": True})


@admin_router.put("/admin/tenants/{tenant}")
async def set_tenant(request: Request, tenant: str) -> Response:
    require_master(request)
    body = orjson.loads(await request.body() or b"{}")
    acct = _accountant(request)
    out = await acct.keys.set_tenant(tenant, store_prompts=body.get("store_prompts"),
                                     max_cost_per_query=body.get("max_cost_per_query"))
    acct.invalidate_auth_cache()
    return _json(out)


@admin_router.get("/admin/ledger/report")
async def ledger_report(request: Request, tenant: str | None = None, since: str = "7d", by: str = "tier") -> Response:
    """tenant omitted: every tenant; by: one or more of reports.DIMENSIONS, comma-separated."""
    require_master(request)
    acct = _accountant(request)
    try:
        rows = await reports.report(acct.redis, tenant, since, by)
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
    try:
        rows = await reports.export_rows(_accountant(request).redis, tenant, since)
    except ValueError as e:
        raise bad_request(str(e), param="since") from None
    return Response(reports.write_export(rows, format), media_type=_MEDIA[format])


async def usage(request: Request) -> Response:
    p = await _client(request)
    tenant = request.query_params.get("tenant") if p is None else p.tenant
    if not tenant:
        raise bad_request("With the master key, pass ?tenant=NAME.", param="tenant")
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
