"""What the rule chain works on and what it answers.

A question flows through the rules in configured order (like aiogram filters): each rule either lets
it on (returns None, possibly noting something on the question for later rules) or refuses it with a
Refusal carrying a stable reason code and the sentence the user reads. Nothing is charged before the
last rule, so a refusal is never charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from storage.ledger import Account

# Reason codes, one per refusal (logs and tests use them; the user reads the configured text).
RATE_LIMITED = "rate_limited"
FROZEN = "frozen"
MODEL_NOT_ALLOWED = "model_not_allowed"
MODEL_UNKNOWN = "model_unknown"
SENSITIVE_QUESTION = "sensitive_question"
NO_CREDITS = "no_credits"


@dataclass
class Question:
    """One question on its way through the chain; rules note what later rules need."""

    openid: str
    model: str
    text: str
    # The generation's key (the answer's msg_key): credits are reserved under it.
    gen_key: str
    # Credits one answer from `model` costs; None when the model is unknown (refused, never free).
    cost: int | None
    account: Account
    whitelisted: bool = False
    reserved: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Pass:
    """Go ahead. `text` is the question as the model should see it (mask-list words starred out).
    `reserved`: credits are held under gen_key; settle them on success, refund them if the model
    failed before the user saw any text."""

    text: str
    reserved: bool
    whitelisted: bool
    account: Account


class Rule(Protocol):
    name: str

    async def check(self, q: Question) -> Refusal | None: ...
