"""Embedded defaults: demo models served by the built-in simulated upstream.

Prices mirror real small / large / reasoning models so the ledgers, budgets and
routing decisions look like production from the first request.
"""

from __future__ import annotations

from typing import Any

DEMO_MODELS: dict[str, dict[str, float]] = {
    # $/token: in, out, cached-in
    "demo-small": {"in": 0.15e-6, "out": 0.60e-6, "cached": 0.075e-6},
    "demo-large": {"in": 2.50e-6, "out": 10.0e-6, "cached": 1.25e-6},
    "demo-reasoner": {"in": 1.10e-6, "out": 4.40e-6, "cached": 0.55e-6},
}


def default_config_mapping(upstream_base: str) -> dict[str, Any]:
    model_list = []
    for name, p in DEMO_MODELS.items():
        model_list.append(
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/{name}", "api_base": upstream_base, "api_key": "sk-mock", "timeout": 30},
                "model_info": {
                    "input_cost_per_token": p["in"],
                    "output_cost_per_token": p["out"],
                    "cache_read_input_token_cost": p["cached"],
                    "supports_reasoning": name == "demo-reasoner",
                },
            }
        )
    return {
        "model_list": model_list,
        "tiers": {
            "fast": {"models": ["demo-small"]},
            "cascade": {"models": ["demo-small"]},
            "reasoning": {"models": ["demo-reasoner"], "reasoning_effort": "medium"},
            "deliberate": {"models": ["demo-large", "demo-large", "demo-large"], "strategy": "vote", "aggregator": "demo-large"},
        },
    }
