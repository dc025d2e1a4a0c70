"""The ceiling: a bare forwarder, to measure what Triage's governance costs over plain proxying.

    python bench/forwarder.py --port P --upstream http://127.0.0.1:M

A raw ASGI app under the same uvicorn settings as `triage serve` (uvloop, httptools, one worker, no
access log): reads the body, POSTs it unchanged through one pooled aiohttp session, answers with
the upstream's status, content type and body (streamed through as it arrives). No auth, no parsing,
no metering. Not part of the product; bench only.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

_session: aiohttp.ClientSession | None = None
_upstream = ""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
                                                 timeout=aiohttp.ClientTimeout(total=300))
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] in ("/health", "/healthz"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    chunks = []
    more = True
    while more:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        more = msg.get("more_body", False)
    assert _session is not None
    async with _session.post(_upstream + scope["path"], data=b"".join(chunks),
                             headers={"content-type": "application/json"}) as r:
        ctype = r.headers.get("content-type", "application/json").encode()
        await send({"type": "http.response.start", "status": r.status, "headers": [(b"content-type", ctype)]})
        if ctype.startswith(b"text/event-stream"):
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": await r.read()})


def main() -> None:
    global _upstream
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:9000")
    a = ap.parse_args()
    _upstream = a.upstream.rstrip("/")
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="on")


if __name__ == "__main__":
    main()
