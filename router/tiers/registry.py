"""The tier registry: `EXECUTORS[plan.tier]` runs an admitted Plan.

Each has `async complete(plan, ctx) -> dict` (a normal chat.completion, usage
summed over all calls, with `usage.cost`) and `stream(plan, ctx)` yielding
chunk dicts, or a str for an SSE comment keep-alive.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol

from router.tiers.base import ExecContext, Plan
from router.tiers.deliberate import DeliberateExecutor
from router.tiers.fast import FastExecutor, PassthroughExecutor
from router.tiers.reasoning import ReasoningExecutor


class Executor(Protocol):
    tier: str

    async def complete(self, plan: Plan, ctx: ExecContext) -> dict[str, Any]: ...

    def stream(self, plan: Plan, ctx: ExecContext) -> AsyncIterator[dict[str, Any] | str]: ...


EXECUTORS: dict[str, Executor] = {
    "fast": FastExecutor(),
    "reasoning": ReasoningExecutor(),
    "deliberate": DeliberateExecutor(),
    "passthrough": PassthroughExecutor(),
}

__all__ = ["EXECUTORS", "Executor", "ExecContext", "Plan"]
