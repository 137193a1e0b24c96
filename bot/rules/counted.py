"""The rate limit and the credits rule as one rule, when only rules that read nothing stored stand
between them (status, models, words, whitelist: the standing they read was read before the chain).

Apart, the two were a question's two writes before its answer: the question counted, then its
credits reserved, each its own transaction (two round trips and two commits on PostgreSQL, in a row).
Together they are one (storage.ledger.admit_and_reserve). What the follower reads is what the rules
in their configured order would say:
- the rules between run first; if one refuses, the question is still counted as the rate limit
  would count it, and a rate-limit refusal wins, as it would have come first;
- else one transaction counts the question and, if counted, reserves: refused by the rate limit
  (nothing reserved), reserved, or refused for credits (counted, as before).
Run this way, a rate-limited question is seen by the rules between (a word hit is logged for it);
nothing they decide is kept.

When the question carries its answer to create (Question.then; the chain passes it only when this
rule is the last), the answer is inserted in the same transaction, once the credits are held: a
question's admission and its answer are one round trip on PostgreSQL instead of two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.rules.base import Go, Question, Refusal, Rule
from bot.rules.credits import CreditsRule
from bot.rules.ratelimit import RateLimitRule
from storage.answers import NewQuestion


class CountedCharge:
    def __init__(self, ratelimit: RateLimitRule, between: Sequence[Rule], credits: CreditsRule) -> None:
        self.ratelimit = ratelimit
        self.between = tuple(between)
        self.credits = credits
        self.name = "+".join(r.name for r in (ratelimit, *self.between, credits))

    async def check(self, q: Question) -> Go | Refusal:
        counted = q  # the question as the rate limit sees it (before the rules between)
        for rule in self.between:
            verdict = await rule.check(q)
            if isinstance(verdict, Refusal):
                limited = await self.ratelimit.check(counted)
                if isinstance(limited, Refusal):
                    return named(limited, self.ratelimit)
                return named(verdict, rule)
            q = verdict.applied_to(q)
        if not (self.ratelimit.counts(counted) and self.credits.charges(q)):
            limited = await self.ratelimit.check(counted)  # at most one of the two writes
            if isinstance(limited, Refusal):
                return named(limited, self.ratelimit)
            charged = await self.credits.check(q)
            if isinstance(charged, Refusal):
                return named(charged, self.credits)
            return _notes(q, bool(charged.reserved))
        assert q.cost is not None
        then = q.then(q.text, q.model) if q.then is not None else None
        done = await self.credits.wallet.ledger.admit_and_reserve(q.openid, q.gen_key, q.cost,
                                                                 self.ratelimit.count(), then)
        if done.reserved is None:
            return named(self.ratelimit.refusal(), self.ratelimit)
        if not done.reserved:
            return named(await self.credits.refusal(q), self.credits)
        return _notes(q, True, done.started)


def _notes(q: Question, reserved: bool, started: NewQuestion | None = None) -> Go:
    """What the rules between noted (the masked text, the whitelist's word), the reservation and
    the answer created with it."""
    return Go(text=q.text, whitelisted=q.whitelisted, reserved=reserved or q.reserved, started=started)


def named(refusal: Refusal, rule: Rule) -> Refusal:
    """`refusal` as given by `rule` (the chain logs which rule refused)."""
    return replace(refusal, by=rule.name)
