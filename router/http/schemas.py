"""Typed request boundary for chat completions.

We validate the fields the proxy acts on and keep the caller's raw dict for
forwarding, so fields we do not model (tools, response_format, seed, …) reach
the upstream byte-for-byte in meaning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.http.errors import ProxyError, bad_request


MAX_N = 8  # choices per request; each is paid for, so the bound is a cost guard too


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    metadata: dict[str, Any] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


def validate_chat(raw: Any) -> ChatRequest:
    if not isinstance(raw, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    try:
        return ChatRequest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            msg = f"Missing required parameter: '{loc}'."
        else:
            msg = f"Invalid value for '{loc}': {err['msg']}."
        raise ProxyError(400, msg, "invalid_request_error", "invalid_value" if err["type"] != "missing" else "missing_required_parameter", loc) from None


def requested_max_tokens(req: ChatRequest) -> int | None:
    return req.max_completion_tokens or req.max_tokens
