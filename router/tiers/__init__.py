"""Tier executors; `router.tiers.registry.EXECUTORS[plan.tier]` runs an admitted Plan."""
