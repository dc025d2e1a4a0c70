"""Every Redis key name Triage uses is built here, and nowhere else.

Layout (``P`` = ``triage:``):

- ``P apikey:<sha256>``          hash: key_id, tenant, label, created_at, revoked, max_cost_per_query, prefix
- ``P keyid:<key_id>``           string: the sha256 of that key (revoke/list by id)
- ``P keys``                     set of key_ids
- ``P tenant:<tenant>``          hash: store_prompts, max_cost_per_query (tenant settings)
- ``P tenants``                  set of tenant names seen
- ``P budget:<scope>``           hash: limit (nano-USD), period, mode, soft_pct  (a policy)
- ``P budgets``                  set of scopes that have a policy
- ``P budgets:ver``              integer bumped on every policy change (admit checks workers' cached view)
- ``P spend:<scope>``            hash: ``d:YYYY-MM-DD`` / ``m:YYYY-MM`` / ``t`` settled spend, ``reserved`` in flight
- ``P holds:<scope>``            zset: ``<request_id>|<nano-USD>`` scored by lease expiry (ms)
- ``P ledger:<tenant>``          stream: one entry per request (field ``d`` = JSON)
- ``P req:<request_id>``         hash: where a request's ledger entry lives + its quality (feedback)
- ``P done:<request_id>``        string: settle idempotency marker
- ``P session:<tenant>:<sha256>`` string: the tier a conversation (x-triage-session) is pinned to, with a TTL
- ``P rollup:<tenant>:<day>``    hash: ``<tier>|<model>|<metric>`` and ``cx|<bucket>|<tier>|<metric>`` counters
- ``P alert:<kind>:<scope>:<period field>:<limit>`` string: set NX when a budget alert is sent, so one
                                 crossing alerts once across all workers; expires after the period

Scopes are ``tenant:<t>`` / ``key:<key_id>``, optionally suffixed with
``:tier:<tier>`` or ``:model:<model>``.
"""

from __future__ import annotations

import hashlib

PREFIX = "triage:"


def apikey(sha: str) -> str:
    return f"{PREFIX}apikey:{sha}"


def key_id(kid: str) -> str:
    return f"{PREFIX}keyid:{kid}"


def keys_index() -> str:
    return f"{PREFIX}keys"


def tenant(name: str) -> str:
    return f"{PREFIX}tenant:{name}"


def tenants_index() -> str:
    return f"{PREFIX}tenants"


def budget(scope: str) -> str:
    return f"{PREFIX}budget:{scope}"


def budgets_index() -> str:
    return f"{PREFIX}budgets"


def budgets_version() -> str:
    return f"{PREFIX}budgets:ver"


def spend(scope: str) -> str:
    return f"{PREFIX}spend:{scope}"


def holds(scope: str) -> str:
    return f"{PREFIX}holds:{scope}"


def ledger(tenant_name: str) -> str:
    return f"{PREFIX}ledger:{tenant_name}"


def session(tenant_name: str, session_id: str) -> str:
    # hashed: the id is client-chosen, so its length and bytes are not ours to trust in a key name
    return f"{PREFIX}session:{tenant_name}:{hashlib.sha256(session_id.encode()).hexdigest()[:32]}"


def request(request_id: str) -> str:
    return f"{PREFIX}req:{request_id}"


def done(request_id: str) -> str:
    return f"{PREFIX}done:{request_id}"


def rollup(tenant_name: str, day: str) -> str:
    return f"{PREFIX}rollup:{tenant_name}:{day}"


def alert_sent(kind: str, scope: str, period_field: str, limit_nusd: int) -> str:
    # the limit is part of the name: raising a budget re-arms its alerts
    return f"{PREFIX}alert:{kind}:{scope}:{period_field}:{limit_nusd}"


# scope names (not keys, but they become part of keys; built here for one spelling)


def scope_tenant(t: str) -> str:
    return f"tenant:{t}"


def scope_key(kid: str) -> str:
    return f"key:{kid}"


def scope_tier(base: str, tier: str) -> str:
    return f"{base}:tier:{tier}"


def scope_model(base: str, model: str) -> str:
    return f"{base}:model:{model}"


def scopes_for(tenant_name: str, kid: str, tier: str, model: str) -> list[str]:
    """All scopes a request counts against, broadest last so messages name the narrowest first."""
    k, t = scope_key(kid), scope_tenant(tenant_name)
    return [scope_tier(k, tier), scope_model(k, model), k, scope_tier(t, tier), scope_model(t, model), t]
