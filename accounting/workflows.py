"""Workflows: the steps of one multi-step job (planner -> executor -> verifier) and the context they re-send.

A step's prompt is cut into blocks (each message, and each paragraph of a long
message); a block's hash is remembered per workflow, so a later step's
*redundant context* is the tokens of the blocks earlier steps already sent,
measured without storing any prompt text. What it cost is those tokens at the
step's input price; what the provider's prompt cache took off is the cached
tokens the upstream reported. Workflow ids are client labels: they are hashed
into the tenant's own keys and never name a budget scope across tenants.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from . import redis_keys as rk
from .settings import lua as _lua

TTL_S = 7 * 86400  # a workflow idle for a week is forgotten (its ledger rows stay)


@dataclass
class StepResult:
    step: int
    redundant_tokens: int
    redundant_nusd: int


class Workflows:
    def __init__(self, redis: Any, ttl_s: int = TTL_S):
        self.redis = redis
        self.ttl_s = ttl_s
        self._step = redis.register_script(_lua("workflow_step.lua"))

    async def observe(self, tenant: str, workflow_id: str, step_name: str, blocks: list[tuple[str, int]], *,
                      tier: str, cost_nusd: int, prompt_tokens: int, cached_tokens: int,
                      input_nusd_per_token: float) -> StepResult:
        args: list[Any] = [workflow_id, rk.workflow_id_hash(workflow_id), f"{time.time():.3f}", self.ttl_s, tier,
                           int(cost_nusd), int(prompt_tokens), int(cached_tokens), repr(float(input_nusd_per_token)),
                           step_name]
        for h, n in blocks:
            args += (h, int(n))
        res = await self._step(keys=[rk.workflow(tenant, workflow_id), rk.workflow_blocks(tenant, workflow_id),
                                     rk.workflows_index(tenant)], args=args)
        return StepResult(int(res[0]), int(res[1]), int(res[2]))

    async def summary(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        """The tenant's most recent workflows, each with steps, depth, cost, redundancy and tiers."""
        hashes = await self.redis.zrevrange(rk.workflows_index(tenant), 0, limit - 1)
        if not hashes:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for h in hashes:
                p.hgetall(rk.workflow_by_hash(tenant, h.decode() if isinstance(h, bytes) else h))
            raw = await p.execute()
        return [parse(r) for r in raw if r]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def parse(h: dict[Any, Any]) -> dict[str, Any]:
    d = {_s(k): _s(v) for k, v in h.items()}
    steps = int(d.get("steps", 0))
    prompt = int(d.get("prompt_tokens", 0))
    red = int(d.get("redundant_tokens", 0))
    cached = int(d.get("cached_tokens", 0))
    depth = sorted((int(k.split(":", 1)[1]), int(v)) for k, v in d.items() if k.startswith("depth:"))
    return {
        "workflow": d.get("id", ""), "steps": steps, "depth": max((n for n, _ in depth), default=0),
        "cost_nusd": int(d.get("cost_nusd", 0)), "cost_per_step_nusd": int(d.get("cost_nusd", 0)) // max(steps, 1),
        "prompt_tokens": prompt, "redundant_tokens": red, "redundant_share": red / prompt if prompt else 0.0,
        "redundant_nusd": int(d.get("redundant_nusd", 0)), "cached_tokens": cached,
        "redundant_cached_share": min(cached / red, 1.0) if red else None,
        "tiers": {k.split(":", 1)[1]: int(v) for k, v in d.items() if k.startswith("tier:")},
        "steps_by_name": {k.split(":", 1)[1]: int(v) for k, v in d.items() if k.startswith("step:")},
        "cost_by_depth_nusd": {str(n): c for n, c in depth}, "first_ts": float(d.get("first_ts", 0)), "last_ts": float(d.get("last_ts", 0)),
    }


def cost_by_depth(workflows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean cost of the n-th step across workflows that reached it: how cost compounds with depth."""
    acc: dict[int, list[int]] = {}
    for w in workflows:
        for n, c in w["cost_by_depth_nusd"].items():
            acc.setdefault(int(n), []).append(c)
    return [{"depth": n, "workflows": len(v), "mean_cost_nusd": sum(v) // len(v)} for n, v in sorted(acc.items())]
