"""Token pricing: what an answer from a token-priced model costs, exactly, in milli-credits.

Prices are credits per 1,000 tokens, which is the same number as milli-credits per token, so the
cost of an answer in milli-credits is `prompt_tokens * prompt_price + completion_tokens *
completion_price`, computed with Fractions (never floats) and rounded UP to a whole milli-credit
once per answer (the rounding rule: at most 0.001 credit per answer in the owner's favour, and
the ledger's sum over any number of answers is exactly the sum of these per-answer prices: no
drift). `min_cost` is a floor per answer.

The reservation before the call is an upper bound in whole credits: every token the context may
hold (chat.max_context_tokens, or the question itself if longer, plus the chat format's framing)
and `max_output_tokens` (sent to the provider as max_tokens, so the answer cannot be longer).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import ceil

from bot.config import ModelConfig
from bot.providers.base import ChatMessage, Usage, estimate_tokens
from bot.providers.errors import estimate_usage

MILLI = 1000  # milli-credits per credit
# ~4 tokens of framing per message in OpenAI's chat format (as bot.providers.errors.estimate_usage).
FRAMING_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """A model's token price: credits per 1,000 prompt / completion tokens, and the least an answer costs."""

    prompt: Decimal
    completion: Decimal
    min_cost: Decimal = Decimal(0)

    @classmethod
    def of(cls, m: ModelConfig | None) -> TokenPrice | None:
        """A [models.NAME] table's token price, None for a fixed `cost` model."""
        if m is None or m.prompt_price is None or m.completion_price is None:
            return None
        return cls(m.prompt_price, m.completion_price, m.min_cost)

    def milli(self, usage: Usage) -> int:
        """The answer's cost in milli-credits: exact, rounded up once, at least min_cost."""
        exact = (usage.prompt_tokens * Fraction(self.prompt) + usage.completion_tokens * Fraction(self.completion))
        return max(ceil(exact), ceil(Fraction(self.min_cost) * MILLI))

    def bound(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """Whole credits to reserve for an answer of at most these many tokens (rounded up)."""
        return -(-self.milli(Usage(prompt_tokens, max_output_tokens)) // MILLI)

    def per_thousand(self) -> tuple[str, str]:
        """The two prices as the follower reads them (no trailing zeros)."""
        return credits_text(self.prompt), credits_text(self.completion)


def credits_text(value: Decimal | int) -> str:
    """1.500 → '1.5', 2.000 → '2', 0.0015 → '0.0015'."""
    d = Decimal(value)
    text = format(d.normalize(), "f") if d != d.to_integral() else str(int(d))
    return text


def milli_text(milli: int) -> str:
    """An amount in milli-credits as credits: 1500 → '1.5', -250 → '-0.25', 3000 → '3'."""
    return credits_text(Decimal(milli) / MILLI)


def prompt_bound(max_context_tokens: int, fixed_prompt_tokens: int, max_turns: int) -> int:
    """The most prompt tokens a question may send: the context budget (or the system prompt and
    question alone, when they are longer), plus framing for every message the context may hold."""
    messages = 2 * max_turns + 2
    return max(max_context_tokens, fixed_prompt_tokens) + FRAMING_PER_MESSAGE * messages


def delivered_usage(usage: Usage | None, messages: list[ChatMessage] | None, question: str, system_prompt: str,
                    answer: str) -> Usage:
    """What an answer used: the provider's report when it gave one for the whole answer, else our
    estimate (marked so) from the prompt and the text actually delivered — an answer cut short is
    charged for what the follower got, not for what the provider might have gone on to write."""
    if usage is not None:
        return usage
    if messages:
        return estimate_usage(messages, answer)
    # taken over after a crash: the context is gone, the system prompt and question are not
    prompt = estimate_tokens(system_prompt) + estimate_tokens(question) + 2 * FRAMING_PER_MESSAGE
    return Usage(prompt, estimate_tokens(answer), estimated=True)
