"""Microbenchmark: admit + settle round trips against a real Redis.

    python bench/admit_settle.py [--redis-url URL] [-n 2000] [-c 32]

Without --redis-url it starts a private EmbeddedRedis. Reports sequential
per-call latency (p50/p99) and concurrent admit+settle pairs per second from
one event loop, with a key budget, a tenant budget and a tier budget in force
(so admit checks and holds 3 scopes and settle charges 6).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from accounting import (
    Accountant,
    AccountingSettings,
    BudgetPolicy,
    LedgerRecord,
    PlanEstimate,
    PriceBook,
    PriceSpec,
    Usage,
)

PRICES = [PriceSpec(name="fast", model_info={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}),
          PriceSpec(name="big", model_info={"input_cost_per_token": 1e-5, "output_cost_per_token": 4e-5})]
PLANS = [PlanEstimate(tier="deliberate", model="big", estimate_usd=0.05),
         PlanEstimate(tier="fast", model="fast", estimate_usd=0.002)]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def run(url: str, n: int, conc: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as spool:
        acct = await Accountant.connect(url, AccountingSettings(spool_dir=spool, counterfactual_model="big"),
                                        PriceBook.build(PRICES))
        plain, info = await acct.keys.create("bench")
        await acct.budgets.set(BudgetPolicy(scope=f"key:{info.key_id}", limit_usd=1e6, period="day"))
        await acct.budgets.set(BudgetPolicy(scope="tenant:bench", limit_usd=1e6, period="month", soft_pct=90))
        await acct.budgets.set(BudgetPolicy(scope="tenant:bench:tier:deliberate", limit_usd=1e6, period="month"))
        await acct.authenticate(plain)
        usage = Usage(prompt_tokens=500, completion_tokens=200, cached_tokens=100)

        async def pair(rid: str) -> tuple[float, float, float]:
            t0 = time.perf_counter()
            q = await acct.authenticate(plain)
            t1 = time.perf_counter()
            adm = await acct.admit(q, rid, PLANS)
            t2 = time.perf_counter()
            m = PLANS[adm.plan_index].model
            rec = LedgerRecord(request_id=rid, key_id=q.key_id, tenant=q.tenant, virtual_model="triage",
                               tier=adm.tier, model=m, complexity=0.42, reason="bench",
                               calls=[acct.upstream_call(m, usage, latency_ms=12.0)], latency_ms=15.0)
            await acct.settle(adm, rec)
            t3 = time.perf_counter()
            return t1 - t0, t2 - t1, t3 - t2

        for i in range(200):  # warm the pool and script cache
            await pair(f"warm{i}")
        auth, adm_l, set_l = [], [], []
        for i in range(n):
            a, b, c = await pair(f"s{i}")
            auth.append(a)
            adm_l.append(b)
            set_l.append(c)
        sem = asyncio.Semaphore(conc)

        async def bounded(i: int) -> None:
            async with sem:
                await pair(f"c{i}")

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(bounded(i) for i in range(n)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        await acct.close()
    return {
        "auth_cached_us_p50": statistics.median(auth) * 1e6,
        "admit_ms_p50": statistics.median(adm_l) * 1e3, "admit_ms_p99": _pct(adm_l, 0.99) * 1e3,
        "settle_ms_p50": statistics.median(set_l) * 1e3, "settle_ms_p99": _pct(set_l, 0.99) * 1e3,
        "pairs_per_s_concurrent": n / wall, "concurrency": conc,
        # client CPU per request (auth + admit + record build + settle): robust to a busy host
        "client_cpu_us_per_pair": cpu / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-c", type=int, default=32)
    a = ap.parse_args()
    if a.redis_url:
        res = asyncio.run(run(a.redis_url, a.n, a.c))
    else:
        from accounting.redis_server import EmbeddedRedis

        with tempfile.TemporaryDirectory() as d, EmbeddedRedis(d, persist=True) as srv:
            res = asyncio.run(run(srv.url, a.n, a.c))
    for k, v in res.items():
        print(f"{k:28s} {v:10.3f}")


if __name__ == "__main__":
    main()
