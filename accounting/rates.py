"""Which per-token rates apply to one call: long-context tiers, service tiers, cache-write lifetimes.

This mirrors litellm's own resolution (``_get_token_base_cost`` and
``get_cost_per_unit`` in ``litellm_core_utils/llm_cost_calc/utils.py``) over the
keys of litellm's price map, so the gateway's bill agrees with
``litellm.completion_cost`` for the same usage:

- ``<rate>_above_<N>k_tokens``: once the *whole* prompt exceeds N tokens, every
  token of the call (input, output, cache reads and writes) is priced at that
  tier; higher thresholds override lower ones; a rate a tier does not list keeps
  the rate below it.
- ``service_tier`` (``priority``, ``flex``; ``fast`` is priced as priority):
  ``<rate>_<tier>`` where the map lists it, else the standard rate.
- ``cache_creation_input_token_cost_above_1hr``: Anthropic's 1-hour cache writes
  (reported as ``cache_creation.ephemeral_1h_input_tokens``); default the 5-minute rate.

Not modelled (no configured chat model needs them today): litellm's
``tiered_pricing`` lists, off-peak windows, batch prices, audio/image tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

IN, OUT = "input_cost_per_token", "output_cost_per_token"
READ, WRITE = "cache_read_input_token_cost", "cache_creation_input_token_cost"
WRITE_1H = "cache_creation_input_token_cost_above_1hr"
REASONING = "output_cost_per_reasoning_token"
_THRESHOLD_BASES = (IN, OUT, READ, WRITE)
_THRESHOLD_PREFIXES = tuple(f"{b}_above_" for b in _THRESHOLD_BASES)
# litellm: ServiceTier value -> cost-key suffix ("fast" bills as priority)
SERVICE_TIER_SUFFIX = {"flex": "flex", "balanced": "balanced", "priority": "priority", "fast": "priority",
                       "ultrafast": "ultrafast"}
_ALL_SUFFIXES = sorted({f"_{s}" for s in SERVICE_TIER_SUFFIX} | {"_fast"}, key=len, reverse=True)
_NON_STANDARD = (*_ALL_SUFFIXES, "_batches")


@dataclass(frozen=True, slots=True)
class Rates:
    input: float
    output: float
    cached_input: float
    cache_write: float
    cache_write_1h: float
    reasoning: float

    def worst_input(self) -> float:
        return max(self.input, self.cache_write, self.cache_write_1h, self.cached_input)

    def worst_output(self) -> float:
        return max(self.output, self.reasoning)


def num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f >= 0 else None


def _parse_threshold(key: str) -> float:
    s = key.rsplit("_above_", 1)[1].split("_tokens")[0]
    return float(s.replace("k", "")) * (1000 if "k" in s else 1)


def threshold_keys(row: Mapping[str, Any]) -> list[str]:
    """Long-context tier keys of a price row, standard and per service tier, lowest threshold first."""
    keys = []
    for k in row:
        if k.startswith(_THRESHOLD_PREFIXES) and "_tokens" in k and row.get(k) is not None:
            try:
                _parse_threshold(k)
            except ValueError:
                continue
            keys.append(k)
    return sorted(keys, key=_parse_threshold)


def thresholds(row: Mapping[str, Any]) -> list[float]:
    return sorted({_parse_threshold(k) for k in threshold_keys(row)})


def resolve(row: Mapping[str, Any], prompt_tokens: int, service_tier: str | None = None) -> Rates:
    """The rates litellm would bill one call with ``prompt_tokens`` at ``service_tier``."""
    sfx = SERVICE_TIER_SUFFIX.get(service_tier.lower()) if service_tier else None

    def key(base: str) -> str:
        return f"{base}_{sfx}" if sfx else base

    def get(k: str, default: float | None) -> float | None:
        v = num(row.get(k))
        if v is not None:
            return v
        if row.get(k) is None:  # a service-tier key the map lacks falls back to the standard key
            for s in _ALL_SUFFIXES:
                if s in k:
                    v = num(row.get(k.replace(s, "")))
                    if v is not None:
                        return v
                    break
        return default

    inp = get(key(IN), 0.0) or 0.0
    out = get(key(OUT), 0.0) or 0.0
    write = get(key(WRITE), None)
    read = get(key(READ), None)
    write_1h_key = key(WRITE_1H)
    tsfx = f"_{sfx}" if sfx else ""
    for k in threshold_keys(row):
        if k.endswith(_NON_STANDARD) and not (tsfx and k.endswith(tsfx)):
            continue
        t = k.rsplit("_above_", 1)[1].split("_tokens")[0]
        if prompt_tokens > _parse_threshold(k):
            inp = get(key(f"{IN}_above_{t}_tokens"), inp) or 0.0
            out = get(key(f"{OUT}_above_{t}_tokens"), out) or 0.0
            write = get(key(f"{WRITE}_above_{t}_tokens"), write)
            pref = key(f"{WRITE_1H}_above_{t}_tokens")
            write_1h_key = pref if row.get(pref) is not None else write_1h_key
            read = get(key(f"{READ}_above_{t}_tokens"), read)
    read = inp if read is None else read
    write = inp if write is None else write
    w1h = get(write_1h_key, None)
    reasoning = num(row.get(REASONING))
    return Rates(input=inp, output=out, cached_input=read, cache_write=write,
                 cache_write_1h=write if w1h is None else w1h, reasoning=out if reasoning is None else reasoning)


def price_keys(row: Mapping[str, Any]) -> dict[str, float]:
    """The token-price keys of a row that ``resolve`` may read (numbers only), to keep on a ModelPrice."""
    out: dict[str, float] = {}
    for k, v in row.items():
        if not isinstance(k, str):
            continue
        if k.startswith((IN, OUT, READ, WRITE, REASONING)) and "audio" not in k and "image" not in k:
            f = num(v)
            if f is not None:
                out[k] = f
    return out
