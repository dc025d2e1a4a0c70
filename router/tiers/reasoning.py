"""reasoning: a reasoning-capable model at the effort the policy chose.

Native reasoning models get `reasoning_effort` and a max_completion_tokens that
includes the thinking budget. Models without native reasoning get a
think-then-answer instruction with a step budget (`ThinkThenAnswer`), and only
the text after the answer marker reaches the client, streamed or not, so the
scratch work is billed but never shown. Which path applies is a property of
whichever deployment ends up serving, so the chain applies it per attempt.

Budget ladder: the configured effort (or less if the client asks for less),
then each lower effort, then the shared max_tokens steps.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from router.tiers import cost
from router.tiers.base import Plan, TierConfig
from router.tiers.fast import SingleCall
from router.tiers.table import EFFORT_RANK, EFFORTS, Knobs, RateInfo, SingleCallTable, clamp_effort, effort_setup
from router.upstream.deployment import Deployment

# Think-then-answer for models without native reasoning: steps and tokens per step.
THINK_STEPS = {"low": 3, "medium": 6, "high": 10}
STEP_TOKENS = 96
# Prompt-token allowance for the think-then-answer instruction; the estimate and the chain both use it.
THINK_PROMPT_TOKENS = 96
THINK_PROMPT = (
    "Think through the problem step by step in at most {steps} short numbered steps. Then write a line "
    "starting with 'FINAL ANSWER:' followed by only the answer the user should see."
)
ANSWER_MARKER = "FINAL ANSWER:"


class ReasoningConfig(TierConfig):
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    thinking_budget_tokens: int | None = Field(default=None, ge=1)


class ReasoningTable(SingleCallTable):
    def __init__(self, tier: ReasoningTier, spec: ReasoningConfig, rate: dict[str, RateInfo]):
        super().__init__(tier, spec, rate)
        self.effort, self.think_scale = effort_setup(spec, "medium")

    def think_tokens(self, effort: str | None) -> int:
        if not effort:
            return 0
        if self.native_any:
            return int(cost.NATIVE_THINK[effort] * self.think_scale)
        return THINK_STEPS[effort] * STEP_TOKENS

    def think_prompt_tokens(self, effort: str | None) -> int:
        return THINK_PROMPT_TOKENS if (effort and not self.native_all) else 0

    def think_steps(self, effort: str | None) -> int | None:
        return THINK_STEPS[effort] if (effort and not self.native_all) else None

    def build_ladder(self, answer: int, client_effort: str | None) -> list[Knobs]:
        effort = clamp_effort(self.effort, client_effort)
        if not effort:
            return [Knobs(None, 1, 1, answer, "")]
        return [Knobs(e, 1, 1, answer, "" if e == effort else f"effort {effort}->{e}")
                for e in EFFORTS[EFFORT_RANK[effort]::-1]]


def answer_start(text: str) -> int | None:
    """Where the visible answer starts: just after the FIRST answer marker, or None.

    The one rule for both paths: a stream can forward the answer as soon as the first
    marker arrives, so the non-streamed path takes the first marker too (a later
    "FINAL ANSWER:" inside the answer stays part of it).
    """
    i = text.find(ANSWER_MARKER)
    return None if i < 0 else i + len(ANSWER_MARKER)


def extract_answer(text: str) -> str:
    i = answer_start(text)
    return text[i:].strip() if i is not None else text


class _AnswerGate:
    """Think-then-answer over a stream: hold text until the answer marker, then forward the rest.

    What reaches the client is exactly `extract_answer(full text)`: the text after the first
    marker, without leading or trailing whitespace (trailing whitespace is held back until
    more text follows it), or the whole text when no marker ever came.
    """

    __slots__ = ("buf", "open", "lead", "ws", "template")

    def __init__(self) -> None:
        self.buf = ""
        self.open = False
        self.lead = False          # marker seen, answer text not yet started
        self.ws = ""               # trailing whitespace held back
        self.template: dict[str, Any] | None = None

    def _chunk(self, text: str | None, finish: str | None = None) -> dict[str, Any]:
        t = self.template or {}
        delta: dict[str, Any] = {"content": text} if text is not None else {}
        return {**{k: v for k, v in t.items() if k != "choices"},
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self.template is None:
            self.template = chunk
        ch = chunk["choices"][0]
        delta = ch.get("delta") or {}
        c = delta.get("content")
        finish = ch.get("finish_reason")
        out: list[dict[str, Any]] = []
        other = {k: v for k, v in delta.items() if k != "content" and v is not None}
        if other:
            # role, tool_calls, refusal, ...: only the scratch text is held back, the rest passes whole
            t = self.template or {}
            out.append({**{k: v for k, v in t.items() if k != "choices"},
                        "choices": [{"index": 0, "delta": other, "finish_reason": None}]})
        if c and not self.open:
            self.buf += c
            i = answer_start(self.buf)
            c = None
            if i is not None:
                self.open = self.lead = True
                c = self.buf[i:]
                self.buf = ""
        if self.open and c:
            if self.lead:
                c = c.lstrip()
            full = self.ws + c
            text = full.rstrip()
            self.ws = full[len(text):]
            if text:
                self.lead = False
                if text == delta.get("content") and not finish and not other:
                    out.append(chunk)
                else:
                    out.append(self._chunk(text))
        if finish:
            out.extend(self.flush(finish))
        return out

    def flush(self, finish: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.open and self.buf:
            # No marker: the model ignored the format; the whole text is the best answer we have.
            out.append(self._chunk(self.buf))
            self.buf = ""
            self.open = True
        self.ws = ""
        if finish:
            out.append(self._chunk(None, finish))
        return out


class ThinkThenAnswer:
    """The chain's `Thinking` hook for deployments without native reasoning."""

    __slots__ = ("steps",)
    prompt_tokens = THINK_PROMPT_TOKENS

    def __init__(self, steps: int):
        self.steps = steps

    def applies(self, dep: Deployment) -> bool:
        return not dep.supports_reasoning

    def instruct(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": THINK_PROMPT.format(steps=self.steps)}, *messages]

    def extract(self, text: str) -> str:
        return extract_answer(text)

    def gate(self) -> _AnswerGate:
        return _AnswerGate()


class ReasoningTier(SingleCall):
    name: ClassVar[str] = "reasoning"
    tier = "reasoning"
    level: ClassVar[int | None] = 1
    default_quality: ClassVar[float] = 0.85
    config_model: ClassVar[type[TierConfig]] = ReasoningConfig
    keepalive: ClassVar[bool] = False

    def thinking(self, plan: Plan) -> ThinkThenAnswer | None:
        return ThinkThenAnswer(plan.think_steps) if plan.think_steps else None

    def table(self, spec: TierConfig, rate: dict[str, RateInfo]) -> ReasoningTable:
        assert isinstance(spec, ReasoningConfig)
        return ReasoningTable(self, spec, rate)


# The executor's historical name.
ReasoningExecutor = ReasoningTier
