"""Per-token prices of a self-hosted deployment priced by the GPU hour.

`model_info` may carry, instead of per-token prices:

  gpu_hour_usd            what one GPU costs per hour (e.g. 3.00 for an H100 in the cloud)
  gpu_count               GPUs serving the deployment (default 1)
  decode_tokens_per_s     output tokens/s the deployment sustains across its batch
  prefill_tokens_per_s    prompt tokens/s (default 10 x decode: prefill is compute-bound and batched)
  utilization             share of paid hours spent serving at that rate (default 1.0; 0.5 = half idle)

Then, with H = gpu_hour_usd x gpu_count / 3600 (USD per second of the fleet):

  output_cost_per_token = H / (decode_tokens_per_s  x utilization)
  input_cost_per_token  = H / (prefill_tokens_per_s x utilization)

Idle time is paid for, so a lower utilization raises the per-token price. The
gateway then meters, budgets and forecasts a self-hosted model like any other.
"""

from __future__ import annotations

from typing import Any, Mapping

KEYS = ("gpu_hour_usd", "gpu_count", "decode_tokens_per_s", "prefill_tokens_per_s", "utilization")
PREFILL_OVER_DECODE = 10.0


def _pos(info: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    v = info.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError(f"model_info.{key} must be a number")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"model_info.{key} must be a number, got {v!r}") from None
    if not f > 0 or f == float("inf"):
        raise ValueError(f"model_info.{key} must be a positive finite number, got {v!r}")
    return f


def per_token_prices(info: Mapping[str, Any]) -> dict[str, float]:
    """`input_cost_per_token` and `output_cost_per_token` derived from GPU-hour pricing ({} when not priced so)."""
    if info.get("gpu_hour_usd") is None:
        return {}
    hour = _pos(info, "gpu_hour_usd")
    gpus = _pos(info, "gpu_count", 1)
    decode = _pos(info, "decode_tokens_per_s")
    if decode is None:
        raise ValueError("model_info.gpu_hour_usd needs decode_tokens_per_s (the deployment's measured throughput)")
    prefill = _pos(info, "prefill_tokens_per_s", decode * PREFILL_OVER_DECODE)
    util = _pos(info, "utilization", 1.0)
    assert hour is not None and gpus is not None and prefill is not None and util is not None
    if util > 1:
        raise ValueError("model_info.utilization is a share of the hours: at most 1")
    usd_per_s = hour * gpus / 3600.0
    return {"input_cost_per_token": usd_per_s / (prefill * util),
            "output_cost_per_token": usd_per_s / (decode * util)}
