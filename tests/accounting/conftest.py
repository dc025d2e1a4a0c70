from __future__ import annotations

import pytest

from accounting import Accountant, AccountingSettings, PriceBook, PriceSpec

# Flat, easy-to-check prices: fast $1/M in, $2/M out; big $10/M in, $40/M out.
FLAT = {
    "fast": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, "cache_read_input_token_cost": 0.5e-6},
    "big": {"input_cost_per_token": 10e-6, "output_cost_per_token": 40e-6, "cache_read_input_token_cost": 2.5e-6},
}


@pytest.fixture()
def prices() -> PriceBook:
    return PriceBook.build([PriceSpec(name=n, model_info=mi) for n, mi in FLAT.items()])


@pytest.fixture()
def settings(tmp_path) -> AccountingSettings:
    return AccountingSettings(spool_dir=str(tmp_path / "spool"), counterfactual_model="big")


@pytest.fixture()
async def acct(redis_url, settings, prices):
    a = await Accountant.connect(redis_url, settings, prices)
    yield a
    await a.close()
