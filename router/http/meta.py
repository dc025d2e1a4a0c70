"""What the chat handler knows about one request, and the ledger row it becomes."""

from __future__ import annotations

import time
from typing import Any

from accounting import Admission, LedgerRecord, Principal, UpstreamCall
from accounting.tokens import count_prompt_tokens
from classifier import last_user_text
from router.counterfactual import top_tier_nusd
from router.http.metering import answer_headers
from router.tiers.base import Decision, ExecContext, Plan
from router.workflow import Workflow


class RequestMeta:
    """What the chat handler knows about a request, for its answer's headers and its ledger row."""

    __slots__ = ("principal", "virtual_model", "decision", "plan", "adm", "t0", "ttft_ms", "messages",
                 "top_tier", "snap", "client_rid", "workflow", "lengths", "asked_tokens", "shadow_args",
                 "clf_version", "wf", "cache_key")

    def __init__(self, principal: Principal, virtual_model: str, decision: Decision, plan: Plan, adm: Admission,
                 t0: float, messages: list[Any], top_tier: str, snap: Any):
        self.principal = principal
        self.virtual_model = virtual_model
        self.decision = decision
        self.plan = plan
        self.adm = adm
        self.t0 = t0
        self.ttft_ms: float | None = None
        self.messages = messages
        self.top_tier = top_tier
        self.snap = snap
        self.client_rid: str | None = None
        self.workflow = ""
        self.lengths: dict[str, dict[str, int]] = {}
        self.asked_tokens: int | None = None
        self.shadow_args: tuple[Any, ...] | None = None
        self.clf_version = ""
        self.wf: Workflow | None = None
        self.cache_key: str | None = None

    def headers(self, rid: str, nusd: int | None, ctx: ExecContext | None = None,
                answered: str | None = None) -> dict[str, str]:
        return answer_headers(self, rid, nusd, ctx, answered)

    def record(self, ctx: ExecContext, *, status: str, partial: bool, streamed: bool) -> LedgerRecord:
        now = time.perf_counter()
        calls = ctx.calls
        # one walk over the calls: the answering call, whether any was estimated, what they cost
        final: UpstreamCall | None = None
        estimated = False
        spent = 0
        for c in calls:
            spent += c.nusd()
            if c.status == "ok" or c.status == "cancelled":
                final = c
            if c.estimated:
                estimated = True
        d = self.decision
        plan = self.plan
        cf_nusd, cf_method = top_tier_nusd(self.snap, self.top_tier, plan.tier, calls, self.messages,
                                           d.complexity, self.lengths, ctx.body, spent, final)
        decision = {
            "signals": d.signals, "classifier": self.clf_version, "cap_usd": d.cap_usd, "chosen": plan.tier,
            "note": plan.note, "knobs": plan.knobs(),
            "candidates": [{"tier": p.tier, "model": p.models[0], "estimate_usd": p.estimate_usd} for p in d.plans],
            "rejected": d.rejected, "admitted_index": self.adm.plan_index,
        }
        if ctx.outcome:
            decision["outcome"] = ctx.outcome
        principal = self.principal
        return LedgerRecord(
            request_id=ctx.request_id, client_request_id=self.client_rid, key_id=principal.key_id,
            tenant=principal.tenant, virtual_model=self.virtual_model, tier=plan.tier,
            # the config name of the model that produced the answer, so reports line up with prices
            model=final.model if final is not None else plan.models[0],
            complexity=d.complexity, reason=d.reason, calls=list(calls), counterfactual_nusd=cf_nusd,
            counterfactual_method=cf_method, workflow=self.workflow,
            client_prompt_tokens=count_prompt_tokens(self.messages) if cf_method == "top-tier" else None,
            ttft_ms=self.ttft_ms, latency_ms=(now - self.t0) * 1000, streamed=streamed, partial=partial,
            estimated=estimated, status=status,
            prompt=last_user_text(self.messages) if principal.store_prompts else None,
            decision=decision,
        )
