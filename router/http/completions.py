"""POST /v1/completions (legacy): one prompt, served through the chat pipeline.

The prompt becomes a single user message; the answer comes back as
`text_completion` (streamed too). Options that only make sense for raw
completion models (`echo`, `suffix`, `best_of` > 1, several prompts) are
refused with a 400 that says so rather than silently changed.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response

from router.http.asgi import SSEAnswer
from router.http.chat import ChatHandler, read_json
from router.http.errors import ProxyError, bad_request
from router.http.sse import DONE_EVENT, encode
from router.http.translate import KEEPALIVE, chat_chunks, chat_json, copy_fields, sse, triage_headers

PASS = ("model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "presence_penalty",
        "frequency_penalty", "logit_bias", "user", "seed", "metadata")


def to_chat(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("Request body must be a JSON object.", code="invalid_json")
    prompt = raw.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise bad_request("Only a single text prompt is supported; send one request per prompt.", param="prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ProxyError(400, "Missing required parameter: 'prompt'.", "invalid_request_error", "missing_required_parameter", "prompt")
    if raw.get("echo"):
        raise bad_request("'echo' is not supported: completions are served by chat models.", param="echo")
    if raw.get("suffix"):
        raise bad_request("'suffix' is not supported: completions are served by chat models.", param="suffix")
    if isinstance(raw.get("best_of"), int) and raw["best_of"] > 1:
        raise bad_request("'best_of' > 1 is not supported; use 'n'.", param="best_of")
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    copy_fields(raw, body, PASS)
    lp = raw.get("logprobs")
    if isinstance(lp, int) and not isinstance(lp, bool) and lp > 0:
        body["logprobs"] = True
        body["top_logprobs"] = min(lp, 20)
    return body


def _choice(ch: dict[str, Any], text: str) -> dict[str, Any]:
    return {"text": text, "index": ch.get("index", 0), "logprobs": None, "finish_reason": ch.get("finish_reason")}


async def completions(request: Request, chat: ChatHandler) -> Response | SSEAnswer:
    raw = await read_json(request, chat.state.snapshot.config.server.max_body_bytes)
    body = to_chat(raw)
    resp = await chat(request, body)
    headers = triage_headers(resp)
    if not body.get("stream"):
        c = chat_json(resp)
        out = {"id": "cmpl-" + str(c.get("id", "")).removeprefix("chatcmpl-"), "object": "text_completion",
               "created": c.get("created") or int(time.time()), "model": c.get("model"),
               "choices": [_choice(ch, (ch.get("message") or {}).get("content") or "") for ch in c.get("choices") or ()],
               "usage": c.get("usage")}
        return Response(orjson.dumps(out), media_type="application/json", headers=headers)

    async def gen() -> AsyncIterator[bytes]:
        async for item in chat_chunks(resp):  # type: ignore[arg-type]
            if item == KEEPALIVE:
                yield b": keep-alive\n\n"
                continue
            assert isinstance(item, dict)
            if "error" in item:
                yield encode(item)
                break
            out = {"id": "cmpl-" + str(item.get("id", "")).removeprefix("chatcmpl-"), "object": "text_completion",
                   "created": item.get("created"), "model": item.get("model"),
                   "choices": [_choice(ch, (ch.get("delta") or {}).get("content") or "") for ch in item.get("choices") or ()]}
            if item.get("usage") is not None:
                out["usage"] = item["usage"]
            yield encode(out)
        yield DONE_EVENT

    return sse(gen(), headers)
