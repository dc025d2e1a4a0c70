"""HTTP surface of the review tools: /metrics, the /ui dashboard and the JSON API it calls.

Who sees what is decided here, on the server: the master key sees every tenant
(and may narrow with ?tenant=), a tenant key sees only its own tenant, and asking
for another tenant is a 403, never an empty page. Key and budget changes from the
dashboard go to the admin API itself (/admin/keys, /admin/budgets), so they get
exactly its validation.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from importlib import resources
from typing import Any

import orjson
from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from accounting import reports, review
from accounting.budgets import BudgetStore
from accounting.models import AccountingUnavailable
from router.config import TIERS
from router.http.auth import bearer_token, is_master
from router.http.errors import ProxyError, bad_request, forbidden, not_found, unauthorized, unavailable

STATIC = resources.files("router.observe").joinpath("static")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store"})


class Viewer:
    __slots__ = ("master", "tenant", "key_id")

    def __init__(self, master: bool, tenant: str | None, key_id: str | None):
        self.master, self.tenant, self.key_id = master, tenant, key_id

    async def tenants(self, request: Request) -> list[str]:
        """The tenants this request may read: a tenant key's own; the master's choice or all."""
        asked = request.query_params.get("tenant") or None
        if not self.master:
            if asked and asked != self.tenant:
                raise forbidden("This key can only see its own tenant.")
            return [self.tenant]  # type: ignore[list-item]
        if asked:
            return [asked]
        return await reports.tenants(_redis(request))


def _redis(request: Request) -> Any:
    return request.app.state.accountant.redis


async def viewer(request: Request) -> Viewer:
    st = request.app.state.triage
    token = bearer_token(request)
    if not token:
        raise unauthorized()
    if is_master(token, st.master_key):
        return Viewer(True, None, None)
    try:
        p = await st.accountant.authenticate(token)
    except AccountingUnavailable:
        raise unavailable("Key store unavailable; cannot authenticate.", "accounting_unavailable") from None
    if p is None:
        raise unauthorized("Invalid API key.")
    return Viewer(False, p.tenant, p.key_id)


def _since(request: Request, default: str = "30d") -> str:
    since = request.query_params.get("since") or default
    try:
        reports.parse_since(since)
    except ValueError:
        raise bad_request("'since' must be like 7d, 24h, 30m or an ISO date.", param="since") from None
    return since


async def _budgets(request: Request, v: Viewer, tenants: list[str]) -> list[dict[str, Any]]:
    store = BudgetStore(_redis(request))
    every = await store.show()
    if v.master and not request.query_params.get("tenant"):
        return every
    keys = {k.key_id for k in await request.app.state.accountant.keys.list(tenants[0])}
    mine = []
    for b in every:
        kind, name = b["scope"].split(":")[:2]
        if (kind == "tenant" and name in tenants) or (kind == "key" and name in keys):
            mine.append(b)
    return mine


# -- API routes ----------------------------------------------------------------------------------


async def session(request: Request) -> Response:
    v = await viewer(request)
    st = request.app.state.triage
    clf = st.classifier
    return _json({
        "role": "master" if v.master else "tenant", "tenant": v.tenant, "key_id": v.key_id,
        "tenants": await v.tenants(request),
        "tiers": [t for t in TIERS if t in st.snapshot.config.tiers], "top_tier": st.snapshot.top_tier,
        "classifier": classifier_info(clf),
        "metrics": st.obs is not None and st.obs.metrics is not None,
    })


def classifier_info(clf: Any) -> dict[str, Any]:
    """Which artifact is routing: its declared version, else a fingerprint of its training metadata,
    so a retrained artifact (`triage train --out ...`) shows as a different version."""
    meta = getattr(clf, "meta", {}) or {}
    th = getattr(clf, "thresholds", {})
    fp = hashlib.sha256(orjson.dumps({"meta": meta, "thresholds": th}, option=orjson.OPT_SORT_KEYS,
                                     default=str)).hexdigest()[:8]
    return {"version": str(getattr(clf, "version", None) or meta.get("version") or f"complexity/1 {fp}"), "fingerprint": fp,
            "trained_on": meta.get("n_fit"), "thresholds": th}


async def overview(request: Request) -> Response:
    v = await viewer(request)
    tenants = await v.tenants(request)
    since = _since(request)
    r = _redis(request)
    rows = await review.report_all(r, tenants, since, "tier")
    tot = reports.totals(rows)
    return _json({
        "tenants": tenants, "since": since, "spend_usd": await review.spend_now(r, tenants),
        "budgets": await _budgets(request, v, tenants), "by_tier": rows, "totals": tot,
        "savings": {"estimated_usd": tot["savings_usd"], "estimated_pct": tot["savings_pct"],
                    "measured": await _measured(request, v, tenants, since)},
        "refusals": await review.refusals(r, tenants, since),
    })


async def _measured(request: Request, v: Viewer, tenants: list[str], since: str) -> dict[str, Any] | None:
    """Shadow-run (sampled) savings against the top tier, where evaluations were recorded."""
    top = request.app.state.triage.snapshot.top_tier
    one = None if v.master and not request.query_params.get("tenant") else tenants[0]
    try:
        m = await reports.measured_savings(_redis(request), one, since, top)
    except (AttributeError, ImportError):  # an accounting layer without evaluations
        return None
    return m if m.get("evaluations") else None


async def spend(request: Request) -> Response:
    v = await viewer(request)
    tenants = await v.tenants(request)
    try:
        data = await review.series(_redis(request), tenants, request.query_params.get("by", "tier"),
                                   _since(request), request.query_params.get("until") or None)
    except ValueError as e:
        raise bad_request(str(e), param="by") from None
    return _json({"tenants": tenants, **data})


async def budgets(request: Request) -> Response:
    v = await viewer(request)
    tenants = await v.tenants(request)
    r = _redis(request)
    keys = {k.key_id: k for k in await request.app.state.accountant.keys.list(None if v.master else v.tenant)}
    out = []
    for b in await _budgets(request, v, tenants):
        row = await review.burn_down(r, b)
        k = keys.get(b["scope"].split(":")[1]) if b["scope"].startswith("key:") else None
        if k is not None:  # a key id means little to a person: say whose key it is
            row["key_tenant"], row["key_label"] = k.tenant, k.label
        out.append(row)
    return _json({"object": "list", "data": out})


async def routing(request: Request) -> Response:
    v = await viewer(request)
    tenants = await v.tenants(request)
    since = _since(request)
    data = await review.routing(_redis(request), tenants, since)
    return _json({"tenants": tenants, "classifier": classifier_info(request.app.state.triage.classifier), **data,
                  "measured": await _measured(request, v, tenants, since)})


_FILTERS = ("key_id", "tier", "model", "status", "virtual_model", "kind")


async def requests(request: Request) -> Response:
    v = await viewer(request)
    tenants = await v.tenants(request)
    q = request.query_params
    try:
        limit = max(1, min(500, int(q.get("limit", "100"))))
        since_ts = reports.parse_since(q["since"]).timestamp() if q.get("since") else None
        until_ts = reports.parse_since(q["until"]).timestamp() if q.get("until") else None
    except ValueError:
        raise bad_request("limit must be an integer; since/until like 7d or an ISO date.", param="since") from None
    rows = await review.ledger_rows(_redis(request), tenants, since_ts, until_ts, limit,
                                    {k: q.get(k, "") for k in _FILTERS})
    for row in rows:
        row.pop("_cost_nusd", None)
        row.pop("prompt", None)  # the list never shows prompts; the detail view does, if stored
        row["calls"] = len(orjson.loads(row["calls"]))
    return _json({"object": "list", "data": rows, "limit": limit})


async def request_detail(request: Request) -> Response:
    v = await viewer(request)
    rid = request.path_params["request_id"]
    # the master may name the tenant (the list links do) to skip looking through every tenant
    tenants = None if v.master and not request.query_params.get("tenant") else await v.tenants(request)
    rec = await review.request_detail(_redis(request), rid, tenants)
    if rec is None:  # another tenant's id looks exactly like an unknown one
        raise not_found(f"No request '{rid}' for this key.", "request_id", code="request_not_found")
    return _json(rec)


# -- metrics -------------------------------------------------------------------------------------


async def metrics(request: Request) -> Response:
    st = request.app.state.triage
    m = st.obs.metrics if st.obs is not None else None
    if m is None:
        raise not_found("Metrics are disabled (observability.metrics.enabled: false).", code="not_found")
    want = m.spec.bearer_token
    if want:
        got = bearer_token(request) or ""
        if not hmac.compare_digest(got.encode(), want.encode()):
            raise unauthorized("/metrics needs the metrics bearer token.")
    budgets = None
    if m.spec.budget_gauges:
        try:
            # bounded: a scrape must answer (with triage_accounting_up 0) while Redis is away
            async with asyncio.timeout(2.0):
                budgets = await BudgetStore(_redis(request)).show()
        except (RedisError, OSError, TimeoutError):
            budgets = None
    else:
        budgets = []
    from router.observe.metrics import CONTENT_TYPE  # noqa: PLC0415

    return Response(await m.render(budgets), media_type=CONTENT_TYPE)


# -- pages ---------------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    html = STATIC.joinpath("index.html").read_bytes()
    return Response(html, media_type="text/html; charset=utf-8", headers={
        "cache-control": "no-store",
        "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"})


def _guard(fn: Any) -> Any:
    async def call(request: Request) -> Response:
        try:
            return await fn(request)
        except ProxyError as e:
            return e.response(request.scope.get("triage.request_id"))
        except (RedisError, OSError, TimeoutError):
            return unavailable("Ledger unavailable; try again shortly.", "accounting_unavailable").response()
    return call


def install(app: FastAPI, ui: bool = True, metrics_on: bool = True) -> None:
    """Add /metrics and /ui with its API to the gateway's app (each only if switched on)."""
    routes = app.router.routes
    if metrics_on:
        routes.append(Route("/metrics", _guard(metrics), methods=["GET"]))
    if not ui:
        return
    api = {"session": session, "overview": overview, "spend": spend, "budgets": budgets, "routing": routing,
           "requests": requests}
    for name, fn in api.items():
        routes.append(Route(f"/ui/api/{name}", _guard(fn), methods=["GET"]))
    routes.append(Route("/ui/api/requests/{request_id}", _guard(request_detail), methods=["GET"]))
    routes.append(Route("/ui", index, methods=["GET"]))
    routes.append(Route("/ui/", index, methods=["GET"]))
    routes.append(Route("/", lambda request: RedirectResponse("/ui", 307), methods=["GET"]))
    routes.append(Mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static"))
