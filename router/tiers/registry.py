"""The tier registry: every tier the gateway knows, in quality order.

Tier names (config keys), `triage/<name>` virtual models, the classifier-facing
levels and the default qualities all derive from `TIERS`. Adding a tier is one
module implementing `router.tiers.base.Tier` plus one line here.

`EXECUTORS[plan.tier]` runs an admitted Plan (each tier, plus passthrough for a
concrete model name).
"""

from __future__ import annotations

from router.tiers.base import ExecContext, Plan, Tier, TierConfig
from router.tiers.cascade import CascadeTier
from router.tiers.deliberate import DeliberateTier
from router.tiers.fast import FastTier, PassthroughExecutor, SingleCall
from router.tiers.reasoning import ReasoningTier

TIERS: tuple[Tier, ...] = (FastTier(), CascadeTier(), ReasoningTier(), DeliberateTier())

BY_NAME: dict[str, Tier] = {t.name: t for t in TIERS}
TIER_NAMES: tuple[str, ...] = tuple(BY_NAME)
DEFAULT_QUALITY: dict[str, float] = {t.name: t.default_quality for t in TIERS}
# The classifier's verdict (fast / reasoning / deliberate) as a level, and the tier at each level.
LEVELS: tuple[str, ...] = tuple(t.name for t in sorted((t for t in TIERS if t.level is not None),
                                                       key=lambda t: t.level or 0))
TIER_RANK: dict[str, int] = {name: i for i, name in enumerate(LEVELS)}
VIRTUAL_MODELS: dict[str, str | None] = {"triage/auto": None, **{f"triage/{t.name}": t.name for t in TIERS}}
CONFIG_MODELS: dict[str, type[TierConfig]] = {t.name: t.config_model for t in TIERS}

Executor = Tier | SingleCall
EXECUTORS: dict[str, Executor] = {**BY_NAME, "passthrough": PassthroughExecutor()}

# A composite tier (cascade runs another tier when its check fails) gets the executors through an
# optional `bind(executors)`: it cannot import this module, which imports it.
for _t in TIERS:
    _bind = getattr(_t, "bind", None)
    if _bind is not None:
        _bind(EXECUTORS)

__all__ = ["BY_NAME", "CONFIG_MODELS", "DEFAULT_QUALITY", "EXECUTORS", "Executor", "ExecContext", "LEVELS", "Plan",
           "TIERS", "TIER_NAMES", "TIER_RANK", "VIRTUAL_MODELS"]
