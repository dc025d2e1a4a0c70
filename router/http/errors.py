"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the proxy reports, whatever raised it, leaves through here so
clients (the openai SDK maps status -> exception class) see one consistent shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ProxyError(Exception):
    """An error to return to the client as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self, request_id: str | None = None) -> Response:
        headers = dict(self.headers)
        if request_id:
            headers["x-request-id"] = request_id
        # 429s for budget are final: tell the SDKs not to retry them.
        return Response(orjson.dumps(self.body()), status_code=self.status, headers=headers, media_type="application/json")


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_request") -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code, param)


def unauthorized(message: str = "Invalid or missing API key. Pass it as 'Authorization: Bearer <key>'.") -> ProxyError:
    return ProxyError(401, message, "authentication_error", "invalid_api_key")


def forbidden(message: str) -> ProxyError:
    return ProxyError(403, message, "permission_error", "forbidden")


def not_found(message: str, param: str | None = None, code: str = "model_not_found") -> ProxyError:
    return ProxyError(404, message, "invalid_request_error", code, param)


def too_large(limit: int) -> ProxyError:
    return ProxyError(413, f"Request body exceeds the {limit} byte limit.", "invalid_request_error", "request_too_large")


def budget_exceeded(message: str, retryable: bool = False) -> ProxyError:
    """Final when spent money is the reason (SDKs must not retry); retryable when only holds of requests
    in flight are (they settle within seconds): retry-after tells the SDK when to try again."""
    if retryable:
        return ProxyError(429, message, "budget_exceeded", "budget_exceeded",
                          headers={"x-should-retry": "true", "retry-after": "1"})
    return ProxyError(429, message, "budget_exceeded", "budget_exceeded", headers={"x-should-retry": "false"})


def rate_limited(message: str, retry_after: float | None = None) -> ProxyError:
    headers = {"retry-after": str(int(retry_after + 0.999))} if retry_after else {}
    return ProxyError(429, message, "rate_limit_error", "rate_limited", headers=headers)


def upstream_failed(message: str, status: int = 502, code: str = "upstream_error") -> ProxyError:
    return ProxyError(status, message, "upstream_error", code)


def unavailable(message: str, code: str = "service_unavailable") -> ProxyError:
    return ProxyError(503, message, "service_unavailable", code)
