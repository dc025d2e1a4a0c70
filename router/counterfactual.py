"""What the top tier would have cost for the same request: the savings baseline.

Not the cheap call's usage at the top model's price (which priced a reasoning model's thinking at a
plain model's rate and three debating agents as one call): the top tier's own plan for this request,
every agent, every debate round and the aggregator, each at its model's price (long-context band and
service tier included), for this request's prompt, with each call's output length the mean of the
tenant's own top-tier calls in the request's complexity bucket (learned at settle, accounting
``toplen``). Until a bucket has LEARN_MIN_CALLS such calls, the documented fallback is this request's
own answer length (its final call's visible completion tokens; its thinking too only when the top tier
reasons natively) for every call. A request that ran on the top
tier counts its real cost. Shadow runs (router/shadow.py) measure the same figure for a sample.

Learned (LEARN_MIN_CALLS top-tier calls in the bucket): calls per request x the mean call of the tier's
models, each call with the bucket's mean output and the bucket's mean call prompt relative to the
client's prompt (agent roles, quoted answers); so a vote's aggregator counts as often as it really ran.
Default: every agent and every round, a debate's aggregator (a vote's runs only on a split and is not
assumed), at the request's own answer length.
"""

from __future__ import annotations

from typing import Any

from accounting import complexity_bucket
from accounting.models import to_nusd
from accounting.tokens import count_prompt_tokens
from router.tiers import cost

LEARN_MIN_CALLS = 20
_UNSET: Any = object()

_TopPlan = tuple[list[str], int, str | None, bool, str | None]
# The last snapshot's top-tier shape. A reload replaces the snapshot (and its config and tables), never
# changes it, so identity says whether this is still it.
_last: list[Any] = [None, None, None, None, None]


def _top_plan(snap: Any, top_tier: str) -> _TopPlan | None:
    """(agents, rounds, aggregator, native reasoning, strategy) of the top tier; None when it is not configured."""
    tables = getattr(snap, "policy_tables", None)
    config = snap.config
    last = _last
    if last[0] is snap and last[1] is tables and last[2] is config and last[3] == top_tier:
        return last[4]  # type: ignore[no-any-return]
    tt = tables.tiers.get(top_tier) if tables is not None else None
    spec = config.tiers.get(top_tier)
    top: _TopPlan | None = None
    if spec is not None:
        top = (list(getattr(tt, "agents", None) or [spec.models[0]]), int(getattr(tt, "rounds", 1) or 1),
               getattr(tt, "aggregator", None), bool(getattr(tt, "native_any", False)), getattr(tt, "strategy", None))
    last[:] = [snap, tables, config, top_tier, top]
    return top


def top_tier_nusd(snap: Any, top_tier: str, plan_tier: str, calls: list[Any], messages: list[Any],
                  complexity: float | None, lengths: dict[str, dict[str, int]], body: dict[str, Any],
                  spent_nusd: int, final: Any = _UNSET) -> tuple[int, str]:
    """(counterfactual nano-USD, method) for one request. `final`: the last call that answered (ok or
    cancelled) when the caller already found it."""
    if plan_tier == top_tier:
        return spent_nusd, "top-tier"
    top = _top_plan(snap, top_tier)
    if top is None:
        return spent_nusd, "none"
    agents, rounds, agg, native_any, strategy = top
    cost_tokens = snap.prices.cost_tokens
    st = cost.service_tier(body)
    priced: dict[tuple[str, int, int], float] = {}

    def call(model: str, prompt: int, completion: int) -> float:
        # a top tier's agents are often one model asked alike: price each distinct call once
        k = (model, prompt, completion)
        c = priced.get(k)
        if c is None:
            c = priced[k] = cost_tokens(model, prompt, completion, service_tier=st)
        return c

    seen = (lengths.get(complexity_bucket(complexity)) if lengths else None) or {}
    n, reqs, cp = seen.get("calls", 0), seen.get("reqs", 0), seen.get("cp", 0)
    if n >= LEARN_MIN_CALLS and reqs > 0 and cp > 0:
        # Learned: this many calls per request, each with the tier's mean output and its mean prompt
        # relative to the client's (agent roles, quoted answers), over the tier's models.
        out = max(1, round(seen.get("ct", 0) / n))
        scale = (seen.get("pt", 0) / n) / (cp / reqs)
        p = max(1, round(count_prompt_tokens(messages) * scale))
        models = agents + ([agg] if agg else [])
        per_call = sum(call(m, p, out) for m in models) / len(models)
        return to_nusd(n / reqs * per_call), "top-tier-plan:learned"
    first = next((c for c in calls if not c.estimated and c.prompt_tokens), None)
    p = first.prompt_tokens if first is not None else count_prompt_tokens(messages)
    if final is _UNSET:
        final = next((c for c in reversed(calls) if c.status in ("ok", "cancelled")), None)
    # the answer's length, not the thinking that produced it: a reasoning model's 512 thinking tokens
    # are not an answer three plain agents would write (a top tier of native reasoners thinks too)
    thought = final.reasoning_tokens if final is not None else 0
    visible = (final.completion_tokens - thought) if final is not None else 1
    out = max(1, visible + (thought if native_any else 0))
    # deliberation agents also get a perspective message: half its bound, a typical length
    role = cost.AGENT_ROLE_TOKENS // 2 if (len(agents) > 1 or agg) else 0
    usd = sum(call(m, p + role, out) for m in agents)
    if len(agents) > 1 or agg:
        quoted = p + cost.quoted_tokens(len(agents), out)
        if rounds > 1:
            usd += (rounds - 1) * sum(call(m, quoted, out) for m in agents)
        # A debate's aggregator always writes the answer; a vote's only breaks a split, which the
        # default does not assume (a counterfactual that errs high would overstate the savings).
        if agg and strategy == "debate":
            usd += call(agg, quoted, out)
    return to_nusd(usd), "top-tier-plan:default"
