"""Typed request boundary for chat completions.

We validate the fields the proxy acts on and keep the caller's raw dict for
forwarding, so fields we do not model (tools, response_format, seed, …) reach
the upstream byte-for-byte in meaning.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from router.http.errors import ProxyError, bad_request

MAX_N = 8  # choices per request; each is paid for, so the bound is a cost guard too
MAX_DEPTH = 32  # JSON nesting of any one field; tool schemas and response formats stay far below
MAX_TOKENS = 1 << 30


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


# JSON types as OpenAI takes them: "yes" is not a boolean and "10" is not a count. Coercing them would
# run a request the caller did not write (a stream they cannot read, a cap they did not set).
TOKENS = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS)]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: TOKENS | None = None
    max_completion_tokens: TOKENS | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=MAX_N)
    metadata: dict[str, Any] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


def _too_deep(v: dict[str, Any] | list[Any], budget: int) -> bool:
    # recursion is bounded by the budget (MAX_DEPTH), and is 2-3x faster than an explicit stack here
    if budget < 0:
        return True
    for y in (v.values() if isinstance(v, dict) else v):
        if isinstance(y, (dict, list)) and _too_deep(y, budget - 1):
            return True
    return False


def validate_chat(raw: Any) -> ChatRequest:
    if not isinstance(raw, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    for k, v in raw.items():
        # Forwarded fields are re-serialized for the upstream; nesting past what any API uses is refused
        # here rather than failing there (a 502 blamed on the upstream, a traceback per request).
        if isinstance(v, (dict, list)) and _too_deep(v, MAX_DEPTH - 1):
            raise bad_request(f"'{k}' is nested more than {MAX_DEPTH} levels deep.", param=str(k),
                              code="invalid_value")
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
