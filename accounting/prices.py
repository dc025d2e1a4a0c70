"""Per-model prices from litellm's bundled price map, with config overrides.

We read ``model_prices_and_context_window_backup.json`` straight from the
installed litellm package instead of importing litellm: the import costs ~3 s
and a lot of RSS, and we only need a handful of rows, once, at startup.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import orjson

from .models import ModelPrice, PriceSpec, Usage

_PRICE_FILE = "model_prices_and_context_window_backup.json"


def litellm_price_map_path() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if not spec or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / _PRICE_FILE
        if p.is_file():
            return p
    return None


_MAP_CACHE: dict[str, Any] | None = None


def load_price_map() -> dict[str, Any]:
    global _MAP_CACHE
    if _MAP_CACHE is None:
        p = litellm_price_map_path()
        _MAP_CACHE = orjson.loads(p.read_bytes()) if p else {}
    return _MAP_CACHE


def lookup(price_map: dict[str, Any], litellm_model: str) -> dict[str, Any] | None:
    """litellm's map keys most models without the provider prefix ("gpt-4o-mini"),
    some with it ("azure/gpt-4o"); try both, like litellm does."""
    if litellm_model in price_map:
        return price_map[litellm_model]
    if "/" in litellm_model:
        provider, rest = litellm_model.split("/", 1)
        row = price_map.get(rest)
        if row is not None:
            return row
        row = price_map.get(rest.split("/")[-1])
        if row is not None and row.get("litellm_provider", provider) in (provider, "text-completion-openai"):
            return row
    return None


_KEYS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "reasoning": "output_cost_per_reasoning_token",
}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f >= 0 else None


class PriceBook:
    """Prices for the configured models only; cost math in USD."""

    def __init__(self, prices: dict[str, ModelPrice]):
        self._prices = prices

    @classmethod
    def build(
        cls,
        specs: list[PriceSpec],
        allow_unpriced_at_estimate: bool = False,
        price_map: dict[str, Any] | None = None,
    ) -> "PriceBook":
        pm = load_price_map() if price_map is None else price_map
        prices: dict[str, ModelPrice] = {}
        unpriced: list[str] = []
        for spec in specs:
            row = dict(lookup(pm, spec.litellm_model) or {}) if spec.litellm_model else {}
            overridden = any(_num(spec.model_info.get(k)) is not None for k in _KEYS.values())
            row.update({k: v for k, v in spec.model_info.items() if v is not None})
            inp, out = _num(row.get(_KEYS["input"])), _num(row.get(_KEYS["output"]))
            if inp is None or out is None:
                unpriced.append(spec.name)
                continue
            cached = _num(row.get(_KEYS["cached_input"]))
            write = _num(row.get(_KEYS["cache_write"]))
            reasoning = _num(row.get(_KEYS["reasoning"]))
            prices[spec.name] = ModelPrice(
                name=spec.name,
                input=inp,
                output=out,
                cached_input=inp if cached is None else cached,
                cache_write=inp if write is None else write,
                reasoning=out if reasoning is None else reasoning,
                source="config" if overridden else "litellm",
            )
        if unpriced and not allow_unpriced_at_estimate:
            names = ", ".join(repr(n) for n in unpriced)
            raise ValueError(
                f"no price known for model(s) {names}: add model_info.input_cost_per_token and "
                "output_cost_per_token to the config, or set settle_unpriced_at_estimate: true"
            )
        if unpriced:
            # Settled at the reserved estimate: price them like the dearest configured model so the
            # reservation (and hence the settlement) is conservative rather than a silent $0.
            dear_in = max((p.input for p in prices.values()), default=0.0)
            dear_out = max((p.output for p in prices.values()), default=0.0)
            if dear_in == 0.0 and dear_out == 0.0:
                raise ValueError("settle_unpriced_at_estimate needs at least one priced model to estimate from")
            for name in unpriced:
                prices[name] = ModelPrice(
                    name=name, input=dear_in, output=dear_out, cached_input=dear_in,
                    cache_write=dear_in, reasoning=dear_out, source="unpriced",
                )
        return cls(prices)

    def __contains__(self, name: str) -> bool:
        return name in self._prices

    def names(self) -> list[str]:
        return list(self._prices)

    def price(self, name: str) -> ModelPrice:
        try:
            return self._prices[name]
        except KeyError:
            raise KeyError(f"model {name!r} is not in the price book") from None

    def cost(self, name: str, usage: Usage) -> float:
        """(prompt - cached - cache_write) x input + cached x cached_input + cache_write x cache_write
        + (completion - reasoning) x output + reasoning x reasoning (reasoning defaults to the output price)."""
        p = self.price(name)
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        write = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        fresh = usage.prompt_tokens - cached - write
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        visible = usage.completion_tokens - reasoning
        return (
            fresh * p.input
            + cached * p.cached_input
            + write * p.cache_write
            + visible * p.output
            + reasoning * p.reasoning
        )

    def estimate(self, name: str, prompt_tokens: int, max_output_tokens: int) -> float:
        """Worst case: nothing cached, every output token at the dearer of output/reasoning price."""
        i, o = self.price(name).worst_rates
        return prompt_tokens * i + max_output_tokens * o
