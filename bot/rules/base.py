"""What the rule chain works on and what it answers.

A question flows through the rules in configured order (like aiogram filters): each rule returns a
verdict, either Go (let it on, with what later rules should see differently: a masked text, the
whitelist's word, reserved credits) or a Refusal carrying a stable reason code and the sentence the
user reads. Rules never change the question they are handed; the chain hands the next rule the
question with the Go's notes applied, so what a rule depends on is in its verdict, not in the order
of side effects. Nothing is charged before the last rule, so a refusal is never charged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from storage.answers import Draft, NewQuestion
from storage.ledger import Account

# Reason codes, one per refusal (logs and tests use them; the user reads the configured text).
RATE_LIMITED = "rate_limited"
FROZEN = "frozen"
MODEL_NOT_ALLOWED = "model_not_allowed"
MODEL_UNKNOWN = "model_unknown"
SENSITIVE_QUESTION = "sensitive_question"
NO_CREDITS = "no_credits"


@dataclass(frozen=True, slots=True)
class Question:
    """One question on its way through the chain, as the rules so far have left it."""

    openid: str
    model: str
    text: str
    # The generation's key (the answer's msg_key): credits are reserved under it.
    gen_key: str
    # Credits one answer from `model` costs; None when the model is unknown (refused, never free).
    cost: int | None
    account: Account
    # the owner's whitelist holds the sender (a fact; the whitelist rule decides what it means)
    on_whitelist: bool = False
    whitelisted: bool = False
    reserved: bool = False
    # The answer to create with the reservation, from the question as the model sees it and the
    # model (bot/rules/counted.py), when the caller asked for it; else the caller creates it after.
    then: Callable[[str, str], Draft] | None = None
    # the answer, created with the reservation
    started: NewQuestion | None = None


@dataclass(frozen=True, slots=True)
class Go:
    """Let the question on. A field set here is what the rules after this one (and the answer) see."""

    text: str | None = None  # the question as the model should see it (mask-list words starred out)
    whitelisted: bool | None = None
    reserved: bool | None = None  # credits are now held under the question's gen_key
    started: NewQuestion | None = None  # the question's answer was created (Question.then)

    def applied_to(self, q: Question) -> Question:
        notes = {k: v for k, v in (("text", self.text), ("whitelisted", self.whitelisted),
                                   ("reserved", self.reserved), ("started", self.started)) if v is not None}
        return replace(q, **notes) if notes else q


GO = Go()  # let it on, nothing to note


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    text: str
    # the rule that refused, when it ran inside another (bot/rules/counted.py); else the chain knows
    by: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Pass:
    """Go ahead. `text` is the question as the model should see it (mask-list words starred out).
    `reserved`: credits are held under gen_key; settle them on success, refund them if the model
    failed before the user saw any text."""

    text: str
    reserved: bool
    whitelisted: bool
    account: Account
    # the answer, when the caller gave the chain one to create (Chain.check's `then`) and it was
    started: NewQuestion | None = None


class Rule(Protocol):
    name: str

    async def check(self, q: Question) -> Go | Refusal: ...
