"""How a settled request becomes the settle script's keys and arguments: exact nano-USD costs,
the counterfactual, every scope charged, rollup fields and ledger trimming."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import redis_keys as rk
from .models import NANO, Admission, LedgerRecord, to_nusd
from .settings import clean as _clean
from .settings import complexity_bucket, day_month

if TYPE_CHECKING:
    from .prices import PriceBook
    from .settings import AccountingSettings

log = logging.getLogger("triage.accounting")


class SettlementMixin:
    """Part of `Accountant` (accounting/accountant.py), split out to keep modules small."""

    settings: AccountingSettings
    prices: PriceBook
    _settle_shapes: dict[tuple[Any, ...], tuple[str, list[str], int, str]]

    def _cost(self, adm: Admission, record: LedgerRecord) -> tuple[int, int]:
        """(cost, counterfactual) in integer nano-USD; every call's own cost is fixed to whole nano-USD
        first, so the record's total is exactly the sum of its calls."""
        for c in record.calls:
            if c.cost_usd == 0.0 and c.cost_nusd is None and (c.prompt_tokens or c.completion_tokens) \
                    and c.model in self.prices:
                c.cost_usd = self.prices.cost(c.model, c.usage(), c.service_tier)
            c.cost_nusd = c.nusd()
            c.cost_usd = c.cost_nusd / NANO
        if record.cost_nusd is not None:
            cost = record.cost_nusd
        elif record.cost_usd is not None:
            cost = to_nusd(record.cost_usd)
        else:
            cost = sum(c.cost_nusd or 0 for c in record.calls)
        if record.model in self.prices and self.prices.price(record.model).unpriced and adm.reserved_nusd:
            cost = max(cost, adm.reserved_nusd)  # configured to settle unpriced models at the reservation
        if record.counterfactual_nusd is not None:
            cf = record.counterfactual_nusd
        elif record.counterfactual_cost_usd is not None:
            cf = to_nusd(record.counterfactual_cost_usd)
        else:
            m = self.settings.counterfactual_model
            if m and m in self.prices:
                cf = to_nusd(self.prices.cost(m, record.total_usage()))
                record.counterfactual_method = record.counterfactual_method or "top-model-at-usage"
            else:
                cf = cost
                record.counterfactual_method = record.counterfactual_method or "none"
        return cost, cf

    @staticmethod
    def rollup_prefix(key_id: str, tier: str, model: str, bucket: str, workflow: str) -> str:
        return f"{_clean(key_id)}|{_clean(tier)}|{_clean(model)}|{_clean(bucket)}|{_clean(workflow)}|"

    def _trim(self, ts: float) -> tuple[str, str]:
        s = self.settings
        if s.ledger_maxlen:
            return "MAXLEN", str(s.ledger_maxlen)
        return "MINID", f"{int((ts - s.ledger_retention_days * 86400) * 1000)}-0"

    def _settle_call(self, adm: Admission, record: LedgerRecord) -> tuple[list[str], list[Any]]:
        cost, cf = self._cost(adm, record)
        record.cost_nusd, record.counterfactual_nusd = cost, cf
        record.cost_usd, record.counterfactual_cost_usd = cost / NANO, cf / NANO
        if not adm.store_prompts:
            record.prompt = None
        if record.ts is None:
            record.ts = time.time()
        if not record.tier:
            record.tier = adm.tier
        if not record.model:
            record.model = adm.model
        tier, model, status = record.tier, record.model, record.status
        tenant = record.tenant or adm.tenant
        kid = record.key_id or adm.key_id
        day, month = day_month(record.ts)
        s = self.settings
        trim_kind, trim_arg = self._trim(record.ts)
        bucket = complexity_bucket(record.complexity)
        rid = record.request_id
        # one pass over the calls: token totals, what each model is charged, billed failures, and what
        # the counterfactual learns from a top-tier request's good calls
        learn = record.counterfactual_method == "top-tier" and status == "ok"
        pt = cached = ct = rt = billed = learn_calls = learn_ct = learn_pt = 0
        per_model: dict[str, int] = {}
        for c in record.calls:
            pt += c.prompt_tokens
            cached += c.cached_tokens
            ct += c.completion_tokens
            rt += c.reasoning_tokens
            per_model[c.model] = per_model.get(c.model, 0) + (c.cost_nusd or 0)
            if c.billed_failure:
                billed += 1
            if learn and c.status == "ok" and not c.estimated:
                learn_calls += 1
                learn_ct += c.completion_tokens
                learn_pt += c.prompt_tokens
        learn_cp = (record.client_prompt_tokens or 0) if learn else 0
        home = adm.model or model
        per_model[home] = per_model.get(home, 0) + cost - sum(per_model.values())  # overrides, unpriced
        # A key's requests settle in the same few shapes: their key names, scope layout and rollup strings
        # are derived once per shape (and day), not per request.
        shape_key = (tenant, kid, tier, model, bucket, record.workflow, day, adm.tenant, tuple(adm.held_scopes),
                     adm.workflow_scope, *per_model)
        shape = self._settle_shapes.get(shape_key)
        if shape is None:
            shape = self._settle_shape(adm, tenant, kid, tier, model, bucket, record.workflow, day, month,
                                       list(per_model))
            if len(self._settle_shapes) > 10_000:
                self._settle_shapes.clear()
            self._settle_shapes[shape_key] = shape
        ledger, tail, n_charge, strs = shape
        # Tier, key and tenant scopes are charged the whole cost; model scopes the cost of calls to
        # that model (a fallback hop to another model counts against that model's budget).
        whole = str(cost)
        amounts = [whole, whole, whole, whole]
        for amt in per_model.values():
            a = str(amt)
            amounts += (a, a)
        if adm.workflow_scope:
            amounts.append(whole)
        cf_est = 1 if (record.counterfactual_method or "").startswith("top-tier-plan") else 0
        nums = f"{adm.reserved_nusd} {whole} {cf} {pt} {cached} {ct} {rt} {len(adm.held_scopes)} {n_charge} " \
               f"{s.idempotency_days * 86400} {s.ledger_retention_days * 86400 + 86400} {cf_est} {billed} " \
               f"{learn_calls} {learn_ct} {learn_pt} {learn_cp}"
        keys = [rk.done(tenant, rid), ledger, rk.request(tenant, rid), *tail]
        args = [rid, f"{adm.request_id}|{adm.reserved_nusd}", record.to_json(), trim_kind, trim_arg, nums, strs,
                " ".join(amounts)]
        return keys, args

    def _settle_shape(self, adm: Admission, tenant: str, kid: str, tier: str, model: str, bucket: str,
                      workflow: str, day: str, month: str, models: list[str]) -> tuple[str, list[str], int, str]:
        """(ledger key, the keys after the request's own, how many scopes are charged, the strings argument)."""
        k_scope, t_scope = rk.scope_key(kid), rk.scope_tenant(tenant)
        charge = [k_scope, t_scope, rk.scope_tier(k_scope, tier), rk.scope_tier(t_scope, tier)]
        for m in models:
            charge += (rk.scope_model(k_scope, m), rk.scope_model(t_scope, m))
        if adm.workflow_scope:
            charge.append(adm.workflow_scope)
        tail = [rk.rollup(tenant, day), rk.top_lengths(tenant), *rk.spend_holds(adm.tenant, adm.held_scopes),
                *rk.spends(tenant, charge)]
        pre = self.rollup_prefix(kid, tier, model, bucket, workflow)
        strs = "\x1f".join((day, month, pre, tenant, kid, tier, model, bucket))
        return rk.ledger(tenant), tail, len(charge), strs
