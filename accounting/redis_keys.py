"""Every Redis key name Triage uses is built here, and nowhere else.

Designed for Redis Cluster: every key one Lua script touches carries the same
hash tag, the tenant (``{<tenant>}``), so admit/settle/release/feedback each run
on one slot. A key belongs to exactly one tenant, so key scopes live in their
tenant's slot too. Keys read one command at a time (API keys, global indexes)
carry no tag. Cross-tenant views (``triage ledger report`` over all tenants,
exports) are aggregated at read time from per-tenant keys, never by a script.

Layout (``P`` = ``triage:``, ``T`` = ``triage:{<tenant>}:``):

- ``P apikey:<sha256>``          hash: key_id, tenant, label, created_at, revoked, max_cost_per_query, prefix
- ``P keyid:<key_id>``           string: the sha256 of that key (revoke/list by id)
- ``P keys``                     set of key_ids
- ``P keys:ver``                 integer bumped on revocation / tenant-settings change (auth caches poll it)
- ``P tenants``                  set of tenant names seen
- ``T tenant``                   hash: store_prompts, max_cost_per_query (tenant settings)
- ``T budget:<scope>``           hash: limit (nano-USD), period, mode, soft_pct  (a policy)
- ``T budgets``                  set of this tenant's scopes that have a policy
- ``T budgets:ver``              integer bumped on every change to this tenant's policies (admit checks it)
- ``T spend:<scope>``            hash: ``d:YYYY-MM-DD`` / ``m:YYYY-MM`` / ``t`` settled spend, ``reserved`` in flight
- ``T holds:<scope>``            zset: ``<request_id>|<nano-USD>`` scored by lease expiry (ms)
- ``T ledger``                   stream: one entry per request (field ``d`` = JSON)
- ``T ledger:cold``              hash: the cold-ledger compaction watermark and its pending batch
- ``T ledger:cold:lock``         string: held by the one compactor working on this tenant
- ``T req:<request_id>``         hash: where a request's ledger entry lives + its quality (feedback)
- ``T done:<request_id>``        string: settle idempotency marker
- ``T session:<sha256>``         string: the tier a conversation (x-triage-session) is pinned to, with a TTL
- ``T rollup:<day>``             hash: ``<key>|<tier>|<model>|<bucket>|<workflow>|<metric>`` counters
                                 (nano-USD and tokens; refusals as ``ref``/``refest``/``ref:<reason>``)
- ``T evals``                    stream: shadow evaluation rows (labelled comparisons), field ``d`` = JSON
- ``T toplen``                   hash: ``<bucket>|calls`` / ``<bucket>|ct``: the tenant's top-tier calls and
                                 completion tokens, what the savings counterfactual learns output length from
- ``T wf:<sha256>``              hash: one workflow's totals (id, steps, cost, redundant/cached context, tiers,
                                 ``depth:<n>`` cost of its n-th step); the id is hashed so any client id is a safe key
- ``T wf:<sha256>:blocks``       set: hashes of the message blocks the workflow's steps already sent
- ``T wfs``                      zset: workflow key hash -> last step time (the tenant's workflow index)
- ``T cache:<sha256>``           string: a cached response (exact match of the request that made it)
- ``T cache:<sha256>:lock``      string: single flight, held by the one request computing that answer
- ``T cache:index``              zset: cached entries by store time, for the per-tenant size limit
- ``P alert:<kind>:<scope>:<period field>:<limit>`` string: set NX when a budget alert is sent, so one
                                 crossing alerts once across all workers; expires after the period

Scopes are ``tenant:<t>`` / ``key:<key_id>``, optionally suffixed with
``:tier:<tier>`` or ``:model:<model>``. A scope spanning tenants (an
organisation over several tenants) would span slots; there is none, and
``docs/scaling.md`` says how one would be handled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

PREFIX = "triage:"


def apikey(sha: str) -> str:
    return f"{PREFIX}apikey:{sha}"


def key_id(kid: str) -> str:
    return f"{PREFIX}keyid:{kid}"


def keys_version() -> str:
    """Bumped on every revocation or tenant-settings change; workers poll it to drop cached principals."""
    return f"{PREFIX}keys:ver"


def keys_index() -> str:
    return f"{PREFIX}keys"


def tagged(tenant_name: str) -> str:
    """The prefix every per-tenant key starts with: the tenant is the Cluster hash tag."""
    return f"{PREFIX}{{{tenant_name}}}:"


def tenant(name: str) -> str:
    return f"{tagged(name)}tenant"


def tenants_index() -> str:
    return f"{PREFIX}tenants"


def budget(tenant_name: str, scope: str) -> str:
    return f"{tagged(tenant_name)}budget:{scope}"


def budgets_index(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}budgets"


def budgets_version(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}budgets:ver"


def spend(tenant_name: str, scope: str) -> str:
    return f"{tagged(tenant_name)}spend:{scope}"


def holds(tenant_name: str, scope: str) -> str:
    return f"{tagged(tenant_name)}holds:{scope}"


def spend_holds(tenant_name: str, scopes: Iterable[str]) -> list[str]:
    """Each scope's spend and holds keys, interleaved (a request's held scopes, as settle releases them)."""
    t = tagged(tenant_name)
    out: list[str] = []
    for sc in scopes:
        out += (f"{t}spend:{sc}", f"{t}holds:{sc}")
    return out


def spends(tenant_name: str, scopes: Iterable[str]) -> list[str]:
    t = tagged(tenant_name)
    return [f"{t}spend:{sc}" for sc in scopes]


def ledger(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}ledger"


def ledger_cold(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}ledger:cold"


def ledger_cold_lock(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}ledger:cold:lock"


def ledger_pattern() -> str:
    """SCAN pattern matching every tenant's ledger stream."""
    return f"{PREFIX}{{*}}:ledger"


def tenant_of_key(key: str) -> str:
    """The tenant whose hash tag a per-tenant key carries (inverse of ``tagged``)."""
    return key[len(PREFIX) + 1:key.rindex("}:")]


def session(tenant_name: str, session_id: str) -> str:
    # hashed: the id is client-chosen, so its length and bytes are not ours to trust in a key name
    return f"{tagged(tenant_name)}session:{hashlib.sha256(session_id.encode()).hexdigest()[:32]}"


def request(tenant_name: str, request_id: str) -> str:
    return f"{tagged(tenant_name)}req:{request_id}"


def done(tenant_name: str, request_id: str) -> str:
    return f"{tagged(tenant_name)}done:{request_id}"


def rollup(tenant_name: str, day: str) -> str:
    return f"{tagged(tenant_name)}rollup:{day}"


def alert_sent(kind: str, scope: str, period_field: str, limit_nusd: int) -> str:
    # the limit is part of the name: raising a budget re-arms its alerts
    return f"{PREFIX}alert:{kind}:{scope}:{period_field}:{limit_nusd}"


def evals(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}evals"


def top_lengths(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}toplen"


# scope names (not keys, but they become part of keys; built here for one spelling)


def scope_tenant_name(scope: str) -> str | None:
    """The tenant a ``tenant:`` scope names; None for ``key:`` scopes (their tenant is the key's)."""
    return scope.split(":", 2)[1] if scope.startswith("tenant:") else None


def scope_tenant(t: str) -> str:
    return f"tenant:{t}"


def scope_key(kid: str) -> str:
    return f"key:{kid}"


def scope_workflow(workflow_id: str) -> str:
    """A workflow's budget scope: the hashed id, inside the tenant's keys like every scope."""
    return f"workflow:{_h(workflow_id)}"


def scope_eval(t: str) -> str:
    """Evaluation (shadow sampling) spend of a tenant: counted apart from its request spend."""
    return f"eval:{t}"


def scope_tier(base: str, tier: str) -> str:
    return f"{base}:tier:{tier}"


def scope_model(base: str, model: str) -> str:
    return f"{base}:model:{model}"


def scopes_for(tenant_name: str, kid: str, tier: str, model: str) -> list[str]:
    """All scopes a request counts against, broadest last so messages name the narrowest first."""
    k, t = scope_key(kid), scope_tenant(tenant_name)
    return [scope_tier(k, tier), scope_model(k, model), k, scope_tier(t, tier), scope_model(t, model), t]


def _h(v: str) -> str:
    return hashlib.sha256(v.encode()).hexdigest()[:32]


def workflow_id_hash(workflow_id: str) -> str:
    return _h(workflow_id)


def workflow(tenant_name: str, workflow_id: str) -> str:
    return f"{tagged(tenant_name)}wf:{_h(workflow_id)}"


def workflow_blocks(tenant_name: str, workflow_id: str) -> str:
    return f"{tagged(tenant_name)}wf:{_h(workflow_id)}:blocks"


def workflows_index(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}wfs"


def workflow_by_hash(tenant_name: str, wf_hash: str) -> str:
    return f"{tagged(tenant_name)}wf:{wf_hash}"


def cache_entry(tenant_name: str, digest: str) -> str:
    return f"{tagged(tenant_name)}cache:{digest}"


def cache_lock(tenant_name: str, digest: str) -> str:
    return f"{tagged(tenant_name)}cache:{digest}:lock"


def cache_index(tenant_name: str) -> str:
    return f"{tagged(tenant_name)}cache:index"
