"""Shadow sampling: answer a sample of requests a second time, in the background, on another tier,
and let a judge say which answer was good. One mechanism for two uses: the measured savings baseline
(issue 13: what the top tier really costs on the same prompts) and routing labels (issue 12: whether
the cheap tier's answer would have done).

- Off by default; per tenant a sample ``rate`` and a monthly evaluation ``budget_usd`` (config ``shadow:``).
- The other tier is the top tier when the request was served below it, the cheapest tier when it was
  served on the top tier (it escalated), so every sampled row pairs a cheap and a strong answer.
- The judge (``shadow.judge_model``) is asked, once per answer, whether that proposed answer to the
  user's question is correct and complete (YES/NO -> 1/0). Without a judge the row is recorded unjudged.
- The ledger gets one evaluation row (accounting ``evals`` stream) with both costs, both scores and the
  labels; its cost (the shadow answer and the judge calls) is evaluation spend, never the tenant's
  request spend or budgets. ``triage ledger labelled`` exports the judged rows for ``triage train``.
- Shadow runs hold no budget and are not admitted: the evaluation budget is checked against the shadow
  plan's worst case before running, and sampling stops for the month once it is spent.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from accounting import LedgerRecord, complexity_bucket
from accounting.models import to_nusd
from accounting.tokens import estimate_prompt_tokens
from classifier import last_user_text
from router import policy
from router.tiers import cost
from router.tiers.base import ExecContext
from router.tiers.registry import EXECUTORS
from router.upstream.chain import complete_chain

log = logging.getLogger("triage.shadow")

JUDGE_SYSTEM = ("You grade answers. The user asks a question, then shows a proposed answer. Reply with exactly "
                "one word: YES if the proposed answer is correct and complete, NO otherwise.")
JUDGE_MAX_TOKENS = 4
CHEAPEST = "fast"  # the floor tier every config has


def sampled(request_id: str, rate: float) -> bool:
    """Deterministic per request id (so a retried settle cannot sample twice differently)."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 2 ** 32 < rate


def answer_text(resp: dict[str, Any]) -> str:
    ch = (resp.get("choices") or [{}])[0]
    msg = ch.get("message") or {}
    return msg.get("content") or ""


_text = answer_text


async def after_serve(*args: Any) -> None:
    """``run`` as a background task of the served request: never raises into it."""
    try:
        await run(*args)
    except Exception:
        log.exception("shadow run for %s failed", args[5] if len(args) > 5 else "?")


async def judge(state: Any, snap: Any, model: str, question: str, answer: str, rid: str
                ) -> tuple[float | None, list[Any]]:
    """(score in {0, 1} or None if the judge said neither, the judge's calls)."""
    msgs = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": question},
            {"role": "user", "content": f"Proposed answer: {answer}"}]
    body = {"model": model, "messages": msgs, "temperature": 0}
    p = estimate_prompt_tokens(msgs)
    ctx = ExecContext(upstream=state.upstream, deployments=snap.deployments, prices=snap.prices, request_id=rid,
                      body=body, budget_usd=0.0)
    # a hair over the worst case: sizing divides by the output rate and must land on JUDGE_MAX_TOKENS
    allowance = cost.chain_cost(cost.rates(snap.prices, [model], p), p, JUDGE_MAX_TOKENS) * 1.01
    try:
        resp = await complete_chain(ctx, [model], body, max_tokens=JUDGE_MAX_TOKENS, prompt=p, allowance=allowance)
    except Exception as e:  # noqa: BLE001 - a judge failure leaves the row unjudged
        log.warning("shadow judge for %s failed: %s", rid, e)
        return None, ctx.calls
    verdict = _text(resp).strip().upper()
    return (1.0 if verdict.startswith("YES") else 0.0 if verdict.startswith("NO") else None), ctx.calls


async def run(state: Any, snap: Any, principal: Any, served_tier: str, complexity: float, rid: str,
              req: Any, fwd: dict[str, Any], cls: Any, prompt_tokens: int, messages: list[Any],
              served_answer: str, served_nusd: int) -> LedgerRecord | None:
    """Shadow one served request if its tenant samples it and can afford it; the evaluation row, or None."""
    cfg = snap.config
    rate, budget = cfg.shadow.for_tenant(principal.tenant)
    if budget <= 0 or not sampled(rid, rate) or served_tier not in cfg.tiers:
        return None
    top = snap.top_tier
    if top == CHEAPEST or CHEAPEST not in cfg.tiers:
        return None
    shadow_tier = CHEAPEST if served_tier == top else top
    acct = state.accountant
    d = policy.decide(req, fwd, cls, None, cfg, snap.prices, prompt_tokens, forced_tier=shadow_tier,
                      tables=snap.policy_tables)
    if not d.plans:
        return None
    plan = d.plans[0]
    judge_model = cfg.shadow.judge_model
    question = last_user_text(messages)
    worst = plan.estimate_usd
    if judge_model:
        jp = estimate_prompt_tokens([{"content": question}, {"content": served_answer}]) + 200 + plan.max_tokens
        worst += 2 * cost.chain_cost(cost.rates(snap.prices, [judge_model], jp), jp, JUDGE_MAX_TOKENS)
    if await acct.eval_spend_nusd(principal.tenant) + to_nusd(worst) > to_nusd(budget):
        return None  # this month's evaluation budget is spent
    body = dict(fwd)
    body["stream"] = False
    body.pop("stream_options", None)
    sid = f"{rid}.shadow"
    sctx = ExecContext(upstream=state.upstream, deployments=snap.deployments, prices=snap.prices, request_id=sid,
                       body=body, budget_usd=plan.estimate_usd, num_retries=getattr(cfg, "num_retries", None))
    try:
        resp = await EXECUTORS[shadow_tier].complete(plan, sctx)
        shadow_answer = _text(resp)
    except Exception as e:  # noqa: BLE001 - a failed shadow run is still evaluation spend
        log.warning("shadow run %s on %s failed: %s", sid, shadow_tier, e)
        shadow_answer = None
    calls = list(sctx.calls)
    shadow_nusd = sctx.spent_nusd()
    served_score = shadow_score = None
    if judge_model and shadow_answer is not None:
        served_score, c1 = await judge(state, snap, judge_model, question, served_answer, f"{sid}.judge1")
        shadow_score, c2 = await judge(state, snap, judge_model, question, shadow_answer, f"{sid}.judge2")
        calls += c1 + c2
    escalated = served_tier == top
    cheap_score, strong_score = (shadow_score, served_score) if escalated else (served_score, shadow_score)
    rec = LedgerRecord(
        request_id=sid, key_id=principal.key_id, tenant=principal.tenant, tier=shadow_tier,
        model=plan.primary_model, complexity=complexity, calls=calls, reason="shadow evaluation",
        evaluation={
            "of_request": rid, "served_tier": served_tier, "served_cost_nusd": served_nusd,
            "shadow_tier": shadow_tier, "shadow_cost_nusd": shadow_nusd, "top_tier": top,
            "cheap_tier": shadow_tier if escalated else served_tier,
            "strong_tier": served_tier if escalated else shadow_tier,
            "escalated": escalated, "complexity": complexity, "bucket": complexity_bucket(complexity),
            "judge_model": judge_model, "served_score": served_score, "shadow_score": shadow_score,
            "cheap_score": cheap_score, "strong_score": strong_score, "shadow_failed": shadow_answer is None,
            "prompt": question if principal.store_prompts else None,
        },
    )
    if await acct.record_evaluation(rec):
        obs = getattr(state, "obs", None)
        if obs is not None:
            obs.evaluated(rec)  # triage_shadow_runs_total / triage_shadow_cost_usd_total
    return rec
