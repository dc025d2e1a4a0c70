"""The OpenAPI document served at /openapi.json (``server.openapi: false`` turns it off).

Hand-assembled rather than FastAPI's generator: the hot routes are plain Starlette
routes and the admin routes read their own bodies, so the generator would describe
neither truthfully. Bodies come from the same pydantic models that validate them;
every route the app serves is listed (ones without an entry here get a minimal
operation), and every error is the OpenAI shape (Anthropic's on the Anthropic routes).
"""

from __future__ import annotations

from typing import Any

from router.http.admin import BudgetSet, Feedback, KeyCreate, TenantSettings
from router.http.schemas import ChatRequest

ERROR = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}},
    }},
}
ANTHROPIC_ERROR = {  # the Anthropic Messages routes answer in Anthropic's shape, as its SDK expects
    "type": "object", "required": ["type", "error"],
    "properties": {"type": {"const": "error"}, "error": {
        "type": "object", "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
}
MODEL_BODY = {"type": "object", "required": ["model"], "properties": {"model": {"type": "string", "minLength": 1}},
              "additionalProperties": True}


def _q(name: str, desc: str, required: bool = False, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": required, "description": desc, "schema": schema}


def _p(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}


def _body(model: Any) -> dict[str, Any]:
    if isinstance(model, dict):
        schema = model
    else:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


SINCE = _q("since", "7d, 24h, 30m or an ISO date (at most ten years back)")
TENANT = _q("tenant", "tenant name (master key only)")

# (method, path) -> summary, parameters, request body, success status
KNOWN: dict[tuple[str, str], tuple[str, list[dict[str, Any]], Any, str]] = {
    ("post", "/v1/chat/completions"): ("OpenAI chat completions, routed by Triage", [], ChatRequest, "200"),
    ("post", "/v1/completions"): ("Legacy text completions", [], MODEL_BODY, "200"),
    ("post", "/v1/embeddings"): ("Embeddings", [], MODEL_BODY, "200"),
    ("post", "/v1/responses"): ("OpenAI Responses API", [], MODEL_BODY, "200"),
    ("post", "/v1/messages"): ("Anthropic Messages API", [], MODEL_BODY, "200"),
    ("post", "/v1/messages/count_tokens"): ("Anthropic token counting", [], MODEL_BODY, "200"),
    ("get", "/v1/models"): ("List models", [], None, "200"),
    ("get", "/v1/models/{model_id}"): ("One model", [_p("model_id", "model id")], None, "200"),
    ("get", "/healthz"): ("Liveness", [], None, "200"),
    ("get", "/readyz"): ("Readiness (Redis reachable)", [], None, "200"),
    ("post", "/admin/reload"): ("Reload the config file", [], None, "200"),
    ("post", "/admin/keys"): ("Create an API key", [], KeyCreate, "201"),
    ("get", "/admin/keys"): ("List API keys", [TENANT], None, "200"),
    ("delete", "/admin/keys/{key_id}"): ("Revoke an API key", [_p("key_id", "k_ + 16 hex digits")], None, "200"),
    ("put", "/admin/budgets"): ("Set a budget policy", [], BudgetSet, "200"),
    ("get", "/admin/budgets"): ("Budget policies with live spend", [_q("scope", "scope prefix")], None, "200"),
    ("delete", "/admin/budgets"): ("Delete a budget policy", [_q("scope", "scope", required=True)], None, "200"),
    ("put", "/admin/tenants/{tenant}"): ("Tenant settings", [_p("tenant", "tenant name")], TenantSettings, "200"),
    ("get", "/admin/ledger/report"): ("Cost and quality report",
                                      [TENANT, SINCE, _q("by", "grouping, comma-separated")], None, "200"),
    ("get", "/admin/ledger/export"): ("Ledger export", [TENANT, SINCE, _q("format", "export format",
                                                                            enum=["jsonl", "csv", "parquet"])],
                                      None, "200"),
    ("get", "/v1/usage"): ("Usage of the caller's tenant", [TENANT, SINCE], None, "200"),
    ("post", "/v1/feedback"): ("Rate a request", [], Feedback, "200"),
}


def _norm(path: str) -> str:
    return path.replace(":path}", "}")


def routes_of(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, FastAPI-included routers too."""
    out: list[tuple[str, str]] = []

    def walk(routes: Any) -> None:
        for r in routes:
            path = getattr(r, "path", None)
            if path is None:
                sub = getattr(getattr(r, "original_router", None), "routes", None)
                if sub is not None:
                    walk(sub)
                continue
            for m in sorted(getattr(r, "methods", None) or ()):
                if m != "HEAD":
                    out.append((m.lower(), _norm(path)))

    walk(app.router.routes)
    return out


def build(app: Any, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes_of(app):
        if path.startswith("/ui/static"):
            continue
        key = (method, path if path.startswith(("/v1", "/admin", "/healthz", "/readyz")) or path == "/"
               else "/v1" + path)
        summary, params, body, ok = KNOWN.get(key, (f"{method.upper()} {path}", [], None, "200"))
        err_ref = "#/components/schemas/AnthropicError" if "/messages" in path else "#/components/schemas/Error"
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", ""),
            "parameters": params,
            "responses": {
                ok: {"description": "success"},
                "default": {"description": "an error, OpenAI-shaped",
                            "content": {"application/json": {"schema": {"$ref": err_ref}}}},
            },
        }
        if body is not None:
            op["requestBody"] = _body(body)
        paths.setdefault(path, {})[method] = op
    comps: dict[str, Any] = {"Error": ERROR, "AnthropicError": ANTHROPIC_ERROR}
    for model in (ChatRequest, KeyCreate, BudgetSet, TenantSettings, Feedback):
        for name, d in (model.model_json_schema(ref_template="#/components/schemas/{model}").get("$defs") or {}).items():
            comps.setdefault(name, d)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Triage", "version": version,
                 "description": "OpenAI-compatible LLM gateway; admin routes need the master key."},
        "paths": paths,
        "components": {"schemas": comps,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
