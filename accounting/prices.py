"""Per-model prices from litellm's bundled price map, with config overrides.

We read ``model_prices_and_context_window_backup.json`` straight from the
installed litellm package instead of importing litellm: the import costs ~3 s
and a lot of RSS, and we only need a handful of rows, once, at startup.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
from pathlib import Path
from typing import Any

import orjson

from .models import ModelPrice, PriceSpec, Usage
from .rates import Rates, num, price_keys, resolve, thresholds
from .self_hosted import per_token_prices

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
_MAP_VERSION: str | None = None


def load_price_map() -> dict[str, Any]:
    global _MAP_CACHE, _MAP_VERSION
    if _MAP_CACHE is None:
        p = litellm_price_map_path()
        raw = p.read_bytes() if p else b"{}"
        _MAP_CACHE = orjson.loads(raw)
        try:
            ver = importlib.metadata.version("litellm")
        except importlib.metadata.PackageNotFoundError:
            ver = "none"
        _MAP_VERSION = f"litellm-{ver}:{hashlib.sha256(raw).hexdigest()[:12]}"
    return _MAP_CACHE


def price_map_version() -> str:
    """Names the price map reports were priced with: litellm's version and the map file's digest."""
    load_price_map()
    return _MAP_VERSION or "none"


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
_num = num


class PriceBook:
    """Prices for the configured models only; cost math in USD."""

    def __init__(self, prices: dict[str, ModelPrice], version: str | None = None):
        self._prices = prices
        self.version = version or price_map_version()
        self.output_caps: dict[str, int] = {}  # model -> most output tokens one call may ask for, when known
        self._rates: dict[tuple[str, int, str | None], Rates] = {}
        self._worst: dict[tuple[str, int, str | None], tuple[float, float]] = {}
        # per model: long-context thresholds, so a call below all of them skips resolution
        self._thresholds = {n: thresholds(p.keys) for n, p in prices.items()}

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
        caps: dict[str, int] = {}
        for spec in specs:
            row = dict(lookup(pm, spec.litellm_model) or {}) if spec.litellm_model else {}
            try:  # a self-hosted deployment priced by the GPU hour: per-token prices follow from its throughput
                hourly = per_token_prices(spec.model_info)
            except ValueError as e:
                raise ValueError(f"model {spec.name!r}: {e}") from None
            overridden = bool(hourly) or any(_num(spec.model_info.get(k)) is not None for k in _KEYS.values())
            row.update({k: v for k, v in spec.model_info.items() if v is not None})
            row.update({k: v for k, v in hourly.items() if spec.model_info.get(k) is None})
            cap = _num(row.get("max_output_tokens"))
            if cap is not None and cap >= 1:
                caps[spec.name] = int(cap)
            inp, out = _num(row.get(_KEYS["input"])), _num(row.get(_KEYS["output"]))
            if inp is None or out is None:
                unpriced.append(spec.name)
                continue
            keys = price_keys(row)
            base = resolve(keys, 0, None)
            prices[spec.name] = ModelPrice(
                name=spec.name,
                input=base.input,
                output=base.output,
                cached_input=base.cached_input,
                cache_write=base.cache_write,
                reasoning=base.reasoning,
                source="config" if overridden else "litellm",
                keys=keys,
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
                    keys={_KEYS["input"]: dear_in, _KEYS["output"]: dear_out},
                )
        book = cls(prices)
        book.output_caps = caps
        return book

    def __contains__(self, name: str) -> bool:
        return name in self._prices

    def names(self) -> list[str]:
        return list(self._prices)

    def price(self, name: str) -> ModelPrice:
        try:
            return self._prices[name]
        except KeyError:
            raise KeyError(f"model {name!r} is not in the price book") from None

    def rates(self, name: str, prompt_tokens: int = 0, service_tier: str | None = None) -> Rates:
        """Rates of one call of ``prompt_tokens`` (long-context tier) at ``service_tier``; memoised."""
        thr = self._thresholds.get(name)
        band = sum(1 for t in thr if prompt_tokens > t) if thr else 0
        st = service_tier.lower() if service_tier else None
        k = (name, band, st)
        r = self._rates.get(k)
        if r is None:
            p = self.price(name)
            r = resolve(p.keys, prompt_tokens, st) if p.keys else Rates(
                p.input, p.output, p.cached_input, p.cache_write, p.cache_write, p.reasoning)
            if len(self._rates) < 10_000:
                self._rates[k] = r
        return r

    def flat_below(self, name: str) -> float:
        """The largest prompt still priced at this model's base rates (inf: it has no long-context bands)."""
        ts = self._thresholds.get(name)
        return min(ts) if ts else math.inf

    def bands(self, name: str, prompt_tokens: int) -> int:
        """How many long-context thresholds of this model a prompt of ``prompt_tokens`` exceeds."""
        return sum(1 for t in self._thresholds.get(name, ()) if prompt_tokens > t)

    def worst_rates(self, name: str, prompt_tokens: int = 0, service_tier: str | None = None) -> tuple[float, float]:
        """(input, output) per-token worst case for a call whose prompt is at most ``prompt_tokens``:
        the dearest of every band up to it, so an estimate never undercuts a shorter real prompt."""
        ts = self._thresholds.get(name, ())
        # the thresholds a prompt exceeds are always the lowest ones, so their count names the answer
        k = (name, sum(1 for t in ts if prompt_tokens > t) if ts else 0, service_tier)
        hit = self._worst.get(k)
        if hit is not None:
            return hit
        worst_in = worst_out = 0.0
        bounds = [0, *(int(t) + 1 for t in ts if prompt_tokens > t)]
        for b in bounds:
            r = self.rates(name, b, service_tier)
            worst_in, worst_out = max(worst_in, r.worst_input()), max(worst_out, r.worst_output())
        if len(self._worst) < 10_000:
            self._worst[k] = (worst_in, worst_out)
        return worst_in, worst_out

    def cost(self, name: str, usage: Usage, service_tier: str | None = None) -> float:
        """The cost of one call's ``usage`` (see `cost_tokens`)."""
        return self.cost_tokens(name, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                                usage.reasoning_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens,
                                service_tier)

    def cost_tokens(self, name: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
                    reasoning_tokens: int = 0, cache_write_tokens: int = 0, cache_write_1h_tokens: int = 0,
                    service_tier: str | None = None) -> float:
        """(prompt - cached - cache_write) x input + cached x cached_input + 5-minute writes x cache_write
        + 1-hour writes x cache_write_1h + (completion - reasoning) x output + reasoning x reasoning, at the
        rates of the call's long-context band and service tier (as litellm.completion_cost bills it).
        Plain counts, no Usage: the per-request paths (each attempt, the counterfactual) price several calls."""
        r = self.rates(name, prompt_tokens, service_tier)
        cached = min(cached_tokens, prompt_tokens)
        write = min(cache_write_tokens, prompt_tokens - cached)
        write_1h = min(cache_write_1h_tokens, write)
        fresh = prompt_tokens - cached - write
        reasoning = min(reasoning_tokens, completion_tokens)
        visible = completion_tokens - reasoning
        return (
            fresh * r.input
            + cached * r.cached_input
            + (write - write_1h) * r.cache_write
            + write_1h * r.cache_write_1h
            + visible * r.output
            + reasoning * r.reasoning
        )

    def estimate(self, name: str, prompt_tokens: int, max_output_tokens: int, service_tier: str | None = None) -> float:
        """Worst case: nothing cached (or all written for an hour), every output token at the dearer of
        output/reasoning price, at the long-context band of the prompt bound."""
        i, o = self.worst_rates(name, prompt_tokens, service_tier)
        return prompt_tokens * i + max_output_tokens * o
