"""Client authentication: a Bearer key, checked against hashed keys in Redis.

The master key (TRIAGE_MASTER_KEY) may also call the API; it acts as the
`admin` tenant with no budget of its own, which is what operators expect when
smoke-testing a deployment.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request

from accounting import Principal
from accounting.models import AccountingUnavailable
from router.http.errors import unauthorized, unavailable
from router.state import AppState

MASTER_PRINCIPAL = Principal(key_id="master", tenant="admin", label="master key")


def bearer_token(request: Request) -> str | None:
    return token_from(request.headers)


def token_from(headers: Any) -> str | None:
    """The API key from request headers (anything with `.get`: Starlette's Headers or a plain dict)."""
    h = headers.get("authorization")
    if h:
        scheme, _, token = h.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return headers.get("api-key") or headers.get("x-api-key")


def is_master(token: str | None, master_key: str | None) -> bool:
    return bool(token and master_key and hmac.compare_digest(token.encode(), master_key.encode()))


async def authenticate(request: Request, st: AppState) -> Principal:
    return await authenticate_headers(request.headers, st)


async def authenticate_headers(headers: Any, st: AppState) -> Principal:
    token = token_from(headers)
    if not token:
        raise unauthorized()
    if is_master(token, st.master_key):
        return MASTER_PRINCIPAL
    try:
        principal = await st.accountant.authenticate(token)
    except AccountingUnavailable:
        raise unavailable("Key store unavailable; cannot authenticate.", "accounting_unavailable") from None
    if principal is None:
        raise unauthorized("Invalid API key.")
    return principal
