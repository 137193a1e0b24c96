"""[texts]: what the bot says (placeholders in braces). `{unit}` may appear in any text of the config
(chat replies, refusals, the page, product names): it is the one name of the credit unit, `unit`."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from bot.config.base import Frozen, Section, check_placeholders
from bot.config.errors import problem

# The commands 帮助 lists, in its order; each line's placeholders: {word} (the command's first word), {unit}.
HELP_COMMANDS = types.MappingProxyType({
    "more": "「{word}」获取较长回答的后续内容",
    "reset": "「{word}」开始新的话题",
    "model": "「{word}」查看和切换模型",
    "balance": "「{word}」查看剩余{unit}",
    "login": "「{word}」登录网页：充值、对话记录",
    "redeem": "「{word} 兑换码」使用兑换码",
    "invite": "「{word}」获取你的邀请码；新关注的用户发送「{word} 邀请码」",
    "key": "「{word} sk-…」使用自己的 API key，「{word} 删除」移除",
    "help": "「{word}」显示本说明",
})
_UNIT = re.compile(r"[^\s{}]{1,8}")

# Reply templates and the placeholders each is filled with.
_PLACEHOLDERS = {"redeem_done": ("credits", "balance"), "redeem_mine": ("credits",), "redeem_limited": ("minutes",),
                 "redeem_used": (), "redeem_expired": (), "redeem_disabled": (), "redeem_invalid": (),
                 "redeem_usage": (), "voice_heard": ("text",), "picture_no_vision": ("models",),
                 "invite_link": ("link",), "model_cost": ("cost",), "model_token_price": ("prompt", "completion"), "model_min_cost": ("min_cost",)}


class TextsConfig(Section):
    welcome: str = "感谢关注！直接发送文字即可和 AI 对话。发送「帮助」查看用法。"
    # The credit unit's one name (e.g. "积分" or "点"): `{unit}` in any text of the config, the page and
    # chat replies say it.
    unit: str = "积分"
    # The reply to 帮助; {commands}: one line per command that is switched on (help_commands).
    help: str = "直接发送文字即可提问。\n{commands}"
    # 帮助's line for each command ({word}, {unit}); "" leaves a command out. Given keys replace the defaults.
    help_commands: Annotated[Mapping[str, str], Frozen] = Field(default_factory=lambda: HELP_COMMANDS)
    thinking: str = "正在思考中，请稍候回复「继续」获取回答。"
    more_marker: str = "（未完，回复「继续」查看后续）"
    text_only: str = "目前只支持文字消息，请直接发送文字。"
    voice_unrecognized: str = "没有识别出语音内容，请再说一次或直接发送文字。"
    model_error: str = "抱歉，AI 服务暂时出了点问题，请稍后再试。"
    refused: str = "抱歉，这个问题暂时无法回答，换个问题试试吧。"
    deadline: str = "抱歉，这次回答超时了，请稍后重试。"
    cut: str = "（回答中断，以上为已生成的部分）"
    nothing_waiting: str = "目前没有待取的回答，直接发送问题即可。"
    new_question_started: str = "——\n你的新问题已开始回答，稍后回复「继续」获取。"
    new_question_pushed: str = "——\n你的新问题已开始回答，答案稍后发给你。"
    reset_done: str = "好的，已开始新的对话。"
    topup_done: str = "充值成功，已到账 {credits} {unit}。感谢支持！"
    model_unavailable: str = "你选择的模型 {model} 暂时不可用，发送「模型」查看可用的模型。"
    model_list: str = "可用的模型（发送「模型 名称」切换）：\n{models}"
    # Each model's price in that list: a fixed cost, or a token price (credits per 1,000 tokens).
    model_cost: str = "每次 {cost} {unit}"
    model_token_price: str = "按用量：每千 token 提问 {prompt} {unit}、回答 {completion} {unit}"
    model_min_cost: str = "，每次至少 {min_cost} {unit}"
    model_switched: str = "已切换到 {model}，之后的提问将使用它。"
    model_no_such: str = "没有名为「{model}」的模型。发送「模型」查看可用的模型。"
    own_key_off: str = "本公众号没有开放使用自己的 API key。"
    own_key_saved: str = "已保存你的 API key，之后的提问将使用它，不消耗{unit}。发送「key 删除」可移除。"
    own_key_removed: str = "已删除你的 API key，之后的提问将使用公众号的{unit}。"
    own_key_none: str = "你还没有保存 API key。发送「key sk-…」保存。"
    own_key_bad: str = "这看起来不是一个有效的 API key，请发送「key sk-…」。"
    own_key_rejected: str = "你的 API key 被服务商拒绝了，请检查后重新发送「key sk-…」，或发送「key 删除」改用公众号的{unit}。"
    # Replies to 兑换 (placeholders in braces).
    redeem_done: str = "兑换成功，{credits} {unit}已到账，当前可用 {balance} {unit}。"
    redeem_mine: str = "这个兑换码你已经兑换过了（{credits} {unit}），不会重复到账。"
    redeem_used: str = "这个兑换码已经被使用过了。"
    redeem_expired: str = "这个兑换码已过期。"
    redeem_disabled: str = "这个兑换码已失效。"
    redeem_invalid: str = "兑换码不正确，请检查后重新发送「兑换 兑换码」。"
    redeem_limited: str = "兑换码输错次数过多，请 {minutes} 分钟后再试。"
    redeem_usage: str = "请发送「兑换 兑换码」，例如：兑换 ABCDE-FGHJK-MNPQR-STVWX"
    # Above the answer to a voice message: what was heard, so a mis-hearing is visible.
    voice_heard: str = "「{text}」"
    voice_unavailable: str = "抱歉，暂时无法处理语音消息，请直接发送文字。"
    picture_no_vision: str = "当前可用的模型看不了图片。能看图片的模型：{models}。"
    picture_failed: str = "抱歉，这张图片无法读取，请重新发送。"

    # Replies to 邀请 (placeholders in braces).
    invite_mine: str = ("你的邀请码：{code}\n好友关注后发送「邀请 {code}」，首次充值后你将获得 {reward} {unit}。"
                        "已邀请 {count} 人。")
    # Added to invite_mine when server.public_url is set: the link a friend opens to arrive invited.
    invite_link: str = "邀请链接：{link}"
    invite_recorded: str = "已记录邀请关系，谢谢！你首次充值后，邀请你的好友将获得奖励。"
    invite_refused: str = "邀请码无效，或你已不是新用户（只有新关注的用户可以填写邀请码）。"
    invite_self: str = "不能填写自己的邀请码哦。"
    invite_already: str = "你已经填写过邀请码了。"
    invite_off: str = "本公众号暂未开放邀请。"

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        if not _UNIT.fullmatch(value):
            raise ValueError("must be 1-8 characters without spaces or braces (e.g. 积分 or 点)")
        return value

    @field_validator("help_commands", mode="before")
    @classmethod
    def _help_commands(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        for name, line in value.items():
            if name not in HELP_COMMANDS:
                raise ValueError(f"unknown command {name!r} (known: {', '.join(HELP_COMMANDS)})")
            if not isinstance(line, str):
                raise ValueError(f"{name}: must be a string")
            if wrong := check_placeholders(line, ("word", "unit")):
                raise ValueError(f"{name}: {wrong}")
        return {**HELP_COMMANDS, **value}

    @model_validator(mode="after")
    def _placeholders(self) -> TextsConfig:
        if wrong := check_placeholders(self.help, ("commands",)):
            raise problem("help", wrong)
        for name, allowed in _PLACEHOLDERS.items():
            wrong = check_placeholders(getattr(self, name), allowed)
            if wrong:
                raise problem(name, wrong)
        return self
