"""How long refusing costs when Redis is gone (moved here from tests/accounting/test_outage.py: a time
bound is a benchmark, not a test).

    python bench/outage_bound.py [-n 20]

Starts a private EmbeddedRedis, kills it, and times n admissions that must fail closed (503 path),
sequentially, with the default settings. With the breaker and the shared probe this is a few
milliseconds per refusal on a refused connect, never n x a socket timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from accounting import Accountant, AccountingSettings, AccountingUnavailable, PlanEstimate, PriceBook, PriceSpec  # noqa: E402
from accounting.ids import new_request_id  # noqa: E402
from accounting.redis_server import EmbeddedRedis  # noqa: E402

PRICES = [PriceSpec(name="fast", model_info={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})]
PLAN = [PlanEstimate(tier="fast", model="fast", estimate_usd=0.01)]


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        srv = EmbeddedRedis(os.path.join(d, "r"), persist=False).start()
        acct = await Accountant.connect(srv.url, AccountingSettings(spool_dir=os.path.join(d, "spool")),
                                        PriceBook.build(PRICES))
        plain, _ = await acct.keys.create("bench")
        p = await acct.authenticate(plain)
        srv.kill()
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                await acct.admit(p, new_request_id(), PLAN)
            except AccountingUnavailable:
                pass
        dt = time.perf_counter() - t0
        print(f"{n} fail-closed admissions with Redis killed: {dt * 1000:.1f} ms total, "
              f"{dt * 1000 / n:.2f} ms each; breaker {acct.breaker.state}")
        await acct.close()
        srv.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    asyncio.run(main(ap.parse_args().n))
