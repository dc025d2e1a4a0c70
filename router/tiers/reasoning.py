"""reasoning: a reasoning-capable model at the effort the policy chose.

Native reasoning models get `reasoning_effort` and a max_completion_tokens
that includes the thinking budget (router/policy.py sizes it). Models without
native reasoning get a think-then-answer instruction with a step budget, and
only the text after the answer marker reaches the client, streamed or not
(router/tiers/fallback.py: `prepare`, `extract_answer`, `_AnswerGate`), so the
scratch work is billed but never shown. Both paths share SingleCall, because
which one applies is a property of whichever deployment ends up serving.
"""

from __future__ import annotations

from router.tiers.fast import SingleCall


class ReasoningExecutor(SingleCall):
    tier = "reasoning"
