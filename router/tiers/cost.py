"""Worst-case cost: the one place the gateway bounds what a plan can spend.

"A request never costs more than its hold" rests on three users agreeing on
these formulas: the policy's estimate (what is reserved), the chain's sizing
of each attempt's max_tokens (what is sent), and the deliberation budget (what
each agent and the aggregator may use). They all call this module.

Rates come from `ModelPrice.worst_rates` (nothing cached, output at the dearer
of visible/reasoning price); a call's worst case is prompt x input rate +
max_tokens x output rate; a fallback chain's worst case is its dearest model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from accounting import PriceBook

Rate = tuple[float, float]  # (USD per prompt token, USD per output token), worst case

# Thinking-token budget added to max_tokens for a native reasoning model, by effort.
NATIVE_THINK = {"low": 1024, "medium": 4096, "high": 16384}
ANSWER_FRAME_TOKENS = 16    # per agent answer quoted into a debate/aggregator prompt
PROMPT_FRAME_TOKENS = 160   # instructions wrapped around the quoted answers
PICK_TOKENS = 16            # an aggregator that picks a candidate replies with its number
AGENT_ROLE_TOKENS = 64      # bound on the perspective message each deliberation agent gets after the shared prefix


def rate(prices: PriceBook, model: str, prompt: int = 0, service_tier: str | None = None) -> Rate:
    """Worst-case rates for a call whose prompt is at most `prompt` tokens at `service_tier`: the dearest
    long-context band up to it (accounting/rates.py), so a 300k-token prompt is held at its real price."""
    if not prompt and not service_tier:
        return prices.price(model).worst_rates
    return prices.worst_rates(model, prompt, service_tier)


def rates(prices: PriceBook, chain: Iterable[str], prompt: int = 0, service_tier: str | None = None) -> list[Rate]:
    return [rate(prices, m, prompt, service_tier) for m in chain]


def service_tier(body: dict) -> str | None:  # type: ignore[type-arg]
    """The client's service_tier when it is one a price map can name (priority, flex, ...)."""
    st = body.get("service_tier")
    return st if isinstance(st, str) and st and st not in ("auto", "default") else None


# Prompts at most this far below a long-context threshold still get that band's rates: debate rounds and
# aggregators quote the agents' answers into the prompt.
QUOTE_HEADROOM = 65_536


def call_cost(r: Rate, prompt: int, max_tokens: int) -> float:
    return prompt * r[0] + max_tokens * r[1]


def chain_cost(chain_rates: Iterable[Rate], prompt: int, max_tokens: int) -> float:
    """Worst case of one call over a fallback chain: whichever model ends up answering."""
    worst = 0.0
    for i, o in chain_rates:
        c = prompt * i + max_tokens * o
        if c > worst:
            worst = c
    return worst


def tokens_within(r: Rate, prompt: int, room: float, max_tokens: int) -> int:
    """The largest max_tokens <= `max_tokens` whose worst case fits in `room` (may be < 0: nothing fits)."""
    if r[1] <= 0:
        return max_tokens
    return min(max_tokens, int((room - prompt * r[0]) / r[1]))


def quoted_tokens(agents: int, agent_max: int) -> int:
    """Bound on what quoting every agent's answer adds to a prompt (debate rounds, aggregator)."""
    return agents * (agent_max + ANSWER_FRAME_TOKENS) + PROMPT_FRAME_TOKENS


def aggregator_max_tokens(answer: int, debate: bool, native: bool) -> int:
    """A debate's aggregator writes the answer; a vote's only picks a number. Native reasoners think a little."""
    return (answer if debate else PICK_TOKENS) + (NATIVE_THINK["low"] if native else 0)


def deliberation_cost(agent_rates: list[Rate], agg_rates: list[Rate], prompt: int, agents: int, rounds: int,
                      agent_max: int, agg_max: int | None) -> float:
    """Round 1 at the client's prompt, later rounds with every answer quoted, then the aggregator.
    Agents' prompts also carry their perspective message (AGENT_ROLE_TOKENS); the aggregator's do not."""
    q = quoted_tokens(agents, agent_max)
    cost = agents * chain_cost(agent_rates, prompt + AGENT_ROLE_TOKENS, agent_max)
    if rounds > 1:
        cost += (rounds - 1) * agents * chain_cost(agent_rates, prompt + q + AGENT_ROLE_TOKENS, agent_max)
    if agg_max is not None:
        cost += chain_cost(agg_rates, prompt + q, agg_max)
    return cost
