"""[rules] and [rules.texts]: the chain a question passes before any credit is reserved."""

from __future__ import annotations

import typing
from typing import Annotated, Literal, Mapping

from pydantic import Field, field_validator, model_validator

from bot.config.base import AsTuple, Frozen, Positive, PositiveInt, Section, Strs, check_placeholders, empty_map
from bot.config.errors import problem

# The rules a question passes before any credit is reserved (bot/rules/), in the order they run.
RuleName = Literal["whitelist", "ratelimit", "status", "models", "words", "credits"]
RULE_NAMES: tuple[str, ...] = typing.get_args(RuleName)

# The placeholders each refusal text may use (a text not listed may use none).
_TEXT_PLACEHOLDERS = {
    "model_not_allowed": ("model",), "model_unknown": ("model",),
    "no_credits": ("cost", "balance", "paid", "daily", "daily_free", "topup"),
    "balance": ("balance", "paid", "daily", "daily_free", "topup"), "topup": ("url",),
    "plan_line": ("tier", "until"), "answer_cost": ("model", "cost", "estimated", "when"),
}


class RefusalTextsConfig(Section):
    """What the user reads when a rule refuses (placeholders in braces), and the 余额 reply."""

    rate_limited: str = "提问太频繁啦，请稍等一分钟再问。"
    frozen: str = "你的账号已被暂停使用，如有疑问请联系公众号客服。"
    model_not_allowed: str = "你当前的账号等级不能使用模型 {model}，请换用其他模型。"
    model_unknown: str = "暂不支持模型 {model}，请换用其他模型。"
    sensitive_question: str = "抱歉，这个问题涉及不适宜讨论的内容，换个问题试试吧。"
    no_credits: str = "余额不足：本次提问需要 {cost} {unit}，你还有 {balance} {unit}。{topup}"
    answer_withheld: str = "抱歉，这个回答包含不适宜的内容，已被隐藏。换个问题试试吧。"
    balance: str = "余额：{balance} {unit}\n其中今日免费：{daily}（每天 {daily_free}，当天有效）\n{topup}"
    # Shown in the two texts above when server.public_url is set.
    topup: str = "充值请打开：{url}"
    # ... and in their place while server.public_url is empty: what to do without a link.
    topup_elsewhere: str = "需要更多{unit}：打开公众号菜单里的网页充值，或发送「兑换 兑换码」使用兑换码。"
    # Added to the 余额 reply while a membership plan runs.
    plan_line: str = "会员：{tier}，有效期至 {until}"
    # The 余额 reply ends with the latest answers' costs: a heading, one line each, and the mark of an
    # answer whose usage was estimated (the provider reported none, or it was cut short).
    answer_costs: str = "最近的回答："
    answer_cost: str = "{when} {model}：{cost} {unit}{estimated}"
    estimated_mark: str = "（估算）"

    @model_validator(mode="after")
    def _placeholders(self) -> RefusalTextsConfig:
        for name in type(self).model_fields:
            if err := check_placeholders(getattr(self, name), _TEXT_PLACEHOLDERS.get(name, ())):
                raise problem(name, err)
        return self


class RulesConfig(Section):
    order: Annotated[tuple[str, ...], AsTuple] = RULE_NAMES
    # Questions per user per `rate_window` seconds, counted across every process.
    rate_limit: PositiveInt = 6
    rate_window: Positive = 60.0
    # Tier -> the models it may use. Empty: every model a channel serves, for every tier.
    # (That each model exists is checked with [[channels]] and [models], in Config.)
    tier_models: Annotated[Mapping[str, Strs], Frozen] = Field(default_factory=empty_map)
    texts: RefusalTextsConfig = Field(default_factory=RefusalTextsConfig)

    @field_validator("order")
    @classmethod
    def _order(cls, order: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for i, name in enumerate(order):
            if name not in RULE_NAMES:
                raise problem(f"[{i}]", f"unknown rule {name!r} (rules: {', '.join(RULE_NAMES)})")
            if name in seen:
                raise problem(f"[{i}]", f"{name!r} is listed twice")
            seen.add(name)
        if "credits" in order and order[-1] != "credits":
            raise problem("", "'credits' must come last: a later refusal would leave credits reserved")
        return order

    @model_validator(mode="after")
    def _free_tier(self) -> RulesConfig:
        if self.tier_models and "free" not in self.tier_models:
            raise problem("tier_models", "must list the 'free' tier (every new account starts there)")
        return self
