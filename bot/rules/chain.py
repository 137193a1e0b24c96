"""The rule chain: the configured rules, in order, between a question and its answer.

    chain = build_chain(cfg, db, words)
    verdict = await chain.check(openid, model, text, gen_key=msg_key, cost=cost)
    if isinstance(verdict, Refusal): reply verdict.text (nothing was charged)
    else: generate from verdict.text; if verdict.reserved: ledger.settle(msg_key) or ledger.refund(msg_key)

Every question first opens the user's account (trial on first contact) and today's free credits."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from bot import metrics
from bot.config import Config
from bot.rules.answers import AnswerCheck
from bot.rules.base import Pass, Question, Refusal, Rule
from bot.rules.counted import CountedCharge
from bot.rules.credits import CreditsRule
from bot.rules.models import ModelsRule
from bot.rules.ratelimit import RateLimitRule
from bot.rules.status import StatusRule
from bot.rules.wallet import Wallet
from bot.rules.whitelist import WhitelistRule
from bot.rules.wordfilter import WordFilter, WordList
from bot.rules.words import WordsRule
from storage.answers import Draft
from storage.db import Database
from storage.ledger import Ledger
from storage.rate_events import RateEvents
from storage.redact import short_user
from storage.standing import Standing

log = structlog.get_logger(__name__)


class Chain:
    def __init__(self, rules: Sequence[Rule], wallet: Wallet) -> None:
        self.rules = tuple(rules)
        self.wallet = wallet

    async def check(self, openid: str, model: str, text: str, *, gen_key: str, cost: int | None,
                    standing: Standing | None = None, then: Callable[[str, str], Draft] | None = None
                    ) -> Pass | Refusal:
        """`standing`: the sender's, if the caller read it already (else one read here). `then`:
        the question's answer, from the text as the model sees it and the model, to create in the
        same transaction as the reservation when the last rule reserves (Pass.started); else
        Pass.started is None and the caller creates it."""
        standing = standing or await self.wallet.standing.of(openid)
        if not (self.rules and isinstance(self.rules[-1], CountedCharge)):
            then = None  # a rule after the reservation could still refuse the question
        q = Question(openid, model, text, gen_key, cost, await self.wallet.open_day(openid, standing),
                     on_whitelist=standing.whitelisted, then=then)
        for rule in self.rules:
            verdict = await rule.check(q)
            if isinstance(verdict, Refusal):
                log.info("rules.refused", rule=verdict.by or rule.name, code=verdict.code, user=short_user(openid),
                         model=model)
                return verdict
            q = verdict.applied_to(q)
        return Pass(q.text, q.reserved, q.whitelisted, q.account, q.started)


def word_filter(cfg: Config, clock: Callable[[], float] = time.monotonic) -> WordFilter:
    """The sensitive-word filter from [words] (built once at start-up; it reloads itself)."""
    w = cfg.words
    lists = [WordList(d.name or cfg.resolve_path(d.path).stem, cfg.resolve_path(d.path), d.action)
             for d in w.dictionaries]
    exceptions_path = cfg.resolve_path(w.exceptions_file) if w.exceptions_file else None
    return WordFilter(lists, w.exceptions, exceptions_path, w.reload_interval, clock)


def build_chain(cfg: Config, db: Database, words: WordFilter, clock: Callable[[], float] = time.time) -> Chain:
    r, texts = cfg.rules, cfg.rules.texts
    wallet = Wallet(Ledger(db, clock, on_moved=metrics.credits_moved), cfg.quota, texts, cfg.server.public_url, clock,
                    cfg.tiers)
    aliases = {alias: name for name, m in cfg.models.items() for alias in m.aliases}
    make: dict[str, Callable[[], Rule]] = {
        "whitelist": WhitelistRule,
        "ratelimit": lambda: RateLimitRule(RateEvents(db), r.rate_limit, r.rate_window, texts.rate_limited, clock),
        "status": lambda: StatusRule(texts.frozen),
        "models": lambda: ModelsRule(r.tier_models, aliases, texts.model_not_allowed, texts.model_unknown),
        "words": lambda: WordsRule(words, texts.sensitive_question, cfg.words.mask_char),
        "credits": lambda: CreditsRule(wallet),
    }
    return Chain(counted_charge([make[name]() for name in r.order]), wallet)


def counted_charge(rules: list[Rule]) -> list[Rule]:
    """The chain with the rate limit, the credits rule and the rules between them as one rule
    (bot/rules/counted.py): the question's count and its reservation become one transaction. Every
    other rule reads nothing stored, so any may stand between; credits comes last (config)."""
    names = [rule.name for rule in rules]
    if "ratelimit" not in names or "credits" not in names:
        return rules
    first, last = names.index("ratelimit"), names.index("credits")
    ratelimit, credits = rules[first], rules[last]
    assert isinstance(ratelimit, RateLimitRule) and isinstance(credits, CreditsRule) and first < last
    return [*rules[:first], CountedCharge(ratelimit, rules[first + 1:last], credits), *rules[last + 1:]]


def answer_check(cfg: Config, words: WordFilter) -> AnswerCheck:
    """The check every answer passes before delivery ([words] answer_action)."""
    return AnswerCheck(words, cfg.words.answer_action, cfg.words.mask_char, cfg.rules.texts.answer_withheld)
