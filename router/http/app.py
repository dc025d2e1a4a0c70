"""The HTTP surface: OpenAI-compatible routes, health, admin, and error shaping.

Hot routes are plain Starlette routes taking a `Request`: FastAPI's dependency
and response-model machinery costs more per call than the whole decision.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import MutableMapping
from contextlib import asynccontextmanager, nullcontext
from typing import Any, AsyncIterator

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accounting.ids import new_request_id
from router.config import VIRTUAL_MODELS, ConfigError, ServerSpec, TriageConfig
from router.http import openapi
from router.http.admin import admin_router
from router.http.anthropic import count_tokens as anthropic_count_tokens
from router.http.anthropic import messages as anthropic_messages
from router.http.asgi import JSONAnswer, SSEAnswer, hot_headers
from router.http.auth import authenticate, bearer_token, is_master
from router.http.chat import ChatHandler
from router.http.completions import completions
from router.http.embeddings import embeddings
from router.http.errors import ProxyError, bad_request, error_body, forbidden, not_found, too_large, unauthorized
from router.http.responses import responses
from router.observe import web as review_web
from router.state import AppState

log = logging.getLogger("triage.app")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_CREATED = int(time.time())


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


_DEFAULT_SERVER = ServerSpec()
_NO_DEADLINE = nullcontext()
# Routes that take prompts get server.max_body_bytes; every other route server.max_admin_body_bytes.
MODEL_PATHS = frozenset(f"{p}/{r}" for p in ("/v1", "") for r in
                        ("chat/completions", "completions", "embeddings", "responses", "messages"))
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})


class RequestId:
    """Pure-ASGI wrapper: every response, even a 500 from deep inside, carries x-request-id.

    It also sends chat completions straight to their handler: FastAPI's middleware
    stack (error, exception, exit-stack middlewares, routing) cost ~10% of a
    request's CPU under load, and the chat handler shapes its own errors.
    """

    def __init__(self, app: Any, chat: "ChatHandler | None" = None):
        self.app = app
        self.chat = chat

    def __getattr__(self, name: str) -> Any:  # tests reach app.state through the wrapper
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Always our own id: it keys holds, settle idempotency, the ledger and feedback, so a client
        # that chose it could replay one id to go unbilled. The client's id is only echoed and recorded.
        rid = new_request_id()
        hdrs = scope["triage.headers"] = hot_headers(scope["headers"])
        client_rid = hdrs.get("x-request-id")
        if client_rid is not None and not _SAFE_ID.match(client_rid):
            client_rid = None
        scope["triage.request_id"] = rid
        scope["triage.client_request_id"] = client_rid
        path = scope["path"]
        try:
            body = await self._read_body(scope, receive, path in MODEL_PATHS)
        except ProxyError as e:
            # The body was refused before any handler saw it; close so the unread rest is not parsed
            # as the next request.
            e.headers.setdefault("connection", "close")
            await self._error(e, rid, client_rid).send_to(send)
            return
        if path in CHAT_PATHS and scope["method"] == "POST" and self.chat is not None and self.chat.state:
            if body is not None:  # None: the client left while sending it, there is no one to answer
                await self._chat(scope, receive, send, body, rid, client_rid)
            return
        extra = [(b"x-request-id", rid.encode())]
        if client_rid is not None:
            extra.append((b"x-client-request-id", client_rid.encode()))

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ())
                           if h[0] != b"x-request-id" and h[0] != b"x-client-request-id"]
                headers += extra
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive if body is None else _replay(body, receive), send_with_id)

    @staticmethod
    def _error(e: ProxyError, rid: str, client_rid: str | None) -> JSONAnswer:
        h = dict(e.headers)
        h["x-request-id"] = rid
        if client_rid is not None:
            h["x-client-request-id"] = client_rid
        return JSONAnswer(orjson.dumps(e.body()), h, e.status)

    def _server_spec(self) -> ServerSpec:
        st = self.chat.state if self.chat is not None else None
        return st.snapshot.config.server if st is not None else _DEFAULT_SERVER

    async def _read_body(self, scope: dict[str, Any], receive: Any, big: bool) -> bytes | None:
        """Read the whole body here, for every route, within a size and a time limit (None if the client
        went away meanwhile). A huge body is cut off as it arrives (never buffered), and one that is
        announced but never sent costs a connection for at most ``body_read_timeout_s``."""
        spec = self._server_spec()
        limit = spec.max_body_bytes if big else spec.max_admin_body_bytes
        for k, v in scope["headers"]:
            if k == b"content-length":
                if not v.isdigit() or len(v) > 18:
                    raise bad_request("Invalid Content-Length header.", code="invalid_content_length")
                if int(v) > limit:
                    raise too_large(limit)
        parts: list[bytes] = []
        size = 0
        more = True
        try:
            # `triage serve`'s protocol marks a request whose whole body the server already holds: reading
            # it cannot wait, so it needs no deadline (arming and disarming one is a few us per request)
            async with (_NO_DEADLINE if scope.get("triage.body_buffered") else asyncio.timeout(spec.body_read_timeout_s)):
                while more:
                    msg = await receive()
                    if msg["type"] != "http.request":
                        return None
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise too_large(limit)
                    if chunk:
                        parts.append(chunk)
                    more = msg.get("more_body", False)
        except TimeoutError:
            raise ProxyError(408, f"The request body did not arrive within {spec.body_read_timeout_s:g} s.",
                             "invalid_request_error", "request_timeout") from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _chat(self, scope: dict[str, Any], receive: Any, send: Any, body: bytes, rid: str,
                    client_rid: str | None) -> None:
        """Chat straight to its handler; its answer (JSON or a stream) goes out as raw ASGI messages."""
        try:
            resp = await self.chat.serve(scope, body)  # type: ignore[union-attr]
        except ProxyError as e:
            await self._error(e, rid, client_rid).send_to(send)
            return
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            err = ProxyError(500, "Internal error in the proxy.", "server_error", "internal_error")
            await self._error(err, rid, client_rid).send_to(send)
            return
        if isinstance(resp, JSONAnswer):
            resp.headers["x-request-id"] = rid
            if client_rid is not None:
                resp.headers["x-client-request-id"] = client_rid
            await resp.send_to(send)
            return
        resp.headers["x-request-id"] = rid
        if client_rid is not None:
            resp.headers["x-client-request-id"] = client_rid
        await resp.send_to(send, receive)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that hands the handler the body already read, then the connection's own messages."""
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def models_payload(st: AppState) -> list[dict[str, Any]]:
    snap = st.snapshot
    out = []
    for vm, tier in VIRTUAL_MODELS.items():
        if tier is None or tier in snap.config.tiers:
            out.append({"id": vm, "object": "model", "created": _CREATED, "owned_by": "triage"})
    for name in snap.model_ids:
        out.append({"id": name, "object": "model", "created": _CREATED, "owned_by": "triage-upstream"})
    return out


def build_app(*, config: TriageConfig | None = None, config_path: str | None = None,
              defaults_upstream: str | None = None) -> RequestId:
    """The ASGI app. With no arguments, reads TRIAGE_CONFIG / TRIAGE_DEFAULTS_UPSTREAM (set by `triage serve`)."""
    config_path = config_path or os.environ.get("TRIAGE_CONFIG") or None
    defaults_upstream = defaults_upstream or os.environ.get("TRIAGE_DEFAULTS_UPSTREAM") or None
    if config is None:
        config = TriageConfig.load(config_path, defaults_upstream=defaults_upstream)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = await AppState.start(config, config_path=config_path, defaults_upstream=defaults_upstream)
        app.state.triage = st
        app.state.accountant = st.accountant
        app.state.master_key = st.master_key
        chat.state = st
        try:
            yield
        finally:
            chat.holds.close()
            await st.close()

    app = FastAPI(title="Triage", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    chat = ChatHandler(None)  # type: ignore[arg-type]  # bound at startup

    # The rest of the surface clients send; each runs through chat's admission and settling.
    async def embeddings_route(request: Request) -> Response:
        return await embeddings(request, chat)

    async def completions_route(request: Request) -> Response | SSEAnswer:
        return await completions(request, chat)

    async def responses_route(request: Request) -> Response | SSEAnswer:
        return await responses(request, chat)

    async def messages_route(request: Request) -> Response | SSEAnswer:
        return await anthropic_messages(request, chat)

    async def count_tokens_route(request: Request) -> Response:
        return await anthropic_count_tokens(request, chat)

    async def chat_route(request: Request) -> Any:
        return await chat(request)

    async def list_models(request: Request) -> Response:
        st: AppState = request.app.state.triage
        await authenticate(request, st)
        return _json({"object": "list", "data": models_payload(st)})

    async def get_model(request: Request) -> Response:
        st: AppState = request.app.state.triage
        await authenticate(request, st)
        mid = request.path_params["model_id"]
        for m in models_payload(st):
            if m["id"] == mid:
                return _json(m)
        raise not_found(f"The model '{mid}' does not exist or you do not have access to it.", "model")

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    openapi_doc: dict[str, Any] = {}

    async def openapi_json(request: Request) -> Response:
        st: AppState = request.app.state.triage
        if not st.snapshot.config.server.openapi:
            raise not_found("Unknown path /openapi.json.", code="not_found")
        if not openapi_doc:
            openapi_doc.update(openapi.build(app, app.version))
        return _json(openapi_doc)

    async def readyz(request: Request) -> Response:
        st: AppState = request.app.state.triage
        redis_ok = await st.accountant.ready()
        body = {"status": "ready" if redis_ok else "not_ready", "redis": redis_ok,
                "config": st.snapshot.config.source, "models": len(st.snapshot.model_ids)}
        return _json(body, 200 if redis_ok else 503)

    async def reload(request: Request) -> Response:
        st: AppState = request.app.state.triage
        token = bearer_token(request)
        if not token:
            raise unauthorized()
        if not is_master(token, st.master_key):
            raise forbidden("Reloading the config needs the master key.")
        try:
            snap = st.reload()
        except (ConfigError, ValueError) as e:
            raise ProxyError(400, str(e), "invalid_request_error", "invalid_config") from None
        return _json({"reloaded": True, "source": snap.config.source, "models": snap.model_ids})

    for prefix in ("/v1", ""):
        app.router.routes.append(Route(f"{prefix}/chat/completions", chat_route, methods=["POST"]))
        app.router.routes.append(Route(f"{prefix}/embeddings", embeddings_route, methods=["POST"]))
        app.router.routes.append(Route(f"{prefix}/completions", completions_route, methods=["POST"]))
        app.router.routes.append(Route(f"{prefix}/responses", responses_route, methods=["POST"]))
        app.router.routes.append(Route(f"{prefix}/messages", messages_route, methods=["POST"]))
        app.router.routes.append(Route(f"{prefix}/messages/count_tokens", count_tokens_route, methods=["POST"]))
        app.router.routes.append(Route(f"{prefix}/models", list_models, methods=["GET"]))
        app.router.routes.append(Route(prefix + "/models/{model_id:path}", get_model, methods=["GET"]))
    app.router.routes.append(Route("/healthz", healthz, methods=["GET"]))
    app.router.routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    app.router.routes.append(Route("/readyz", readyz, methods=["GET"]))
    app.router.routes.append(Route("/admin/reload", reload, methods=["POST"]))
    app.include_router(admin_router)
    review_web.install(app, ui=config.observability.ui, metrics_on=config.observability.metrics.enabled)

    @app.exception_handler(ProxyError)
    async def proxy_error(request: Request, exc: ProxyError) -> Response:
        return exc.response(request.scope.get("triage.request_id"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _json(error_body(f"Invalid value for '{loc}': {first.get('msg')}.", "invalid_request_error", "invalid_value", loc or None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: ("not_found_error", "not_found"), 405: ("invalid_request_error", "method_not_allowed")}
        t, code = kind.get(exc.status_code, ("invalid_request_error", str(exc.status_code)))
        msg = f"Unknown path {request.url.path}." if exc.status_code == 404 else str(exc.detail)
        return _json(error_body(msg, t, code), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _json(error_body("Internal error in the proxy.", "server_error", "internal_error"), 500)

    return RequestId(app, chat)


def create_app() -> RequestId:
    """uvicorn factory (`router.http.app:create_app`), used for multi-worker serving."""
    return build_app()
