"""Config: every section, and the rules that tie one section to another."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Mapping

from pydantic import Field, model_validator

from bot.config.ai_label import AiLabelConfig
from bot.config.analytics import AnalyticsConfig
from bot.config.answer_page import AnswerPageConfig
from bot.config.base import AsTuple, Frozen, Section, empty_map, resolve, with_unit
from bot.config.channels import ChannelConfig
from bot.config.chat import ChatConfig
from bot.config.codes import CodesConfig
from bot.config.commands import CommandsConfig
from bot.config.companion import CompanionConfig
from bot.config.errors import problem
from bot.config.invites import InvitesConfig
from bot.config.log import LogConfig
from bot.config.media import MediaConfig
from bot.config.metrics import MetricsConfig
from bot.config.models import ModelConfig
from bot.config.pay import PayConfig
from bot.config.plans import PlansConfig, TierConfig
from bot.config.products import ProductConfig
from bot.config.quota import QuotaConfig
from bot.config.router import RouterConfig
from bot.config.rules import RulesConfig
from bot.config.server import ServerConfig
from bot.config.speech import SpeechConfig
from bot.config.storage import StorageConfig
from bot.config.texts import TextsConfig
from bot.config.wechat import WechatConfig
from bot.config.words import WordsConfig


class Config(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    wechat: WechatConfig = Field(default_factory=WechatConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    texts: TextsConfig = Field(default_factory=TextsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    channels: Annotated[tuple[ChannelConfig, ...], AsTuple] = ()
    models: Annotated[Mapping[str, ModelConfig], Frozen] = Field(default_factory=empty_map)
    router: RouterConfig = Field(default_factory=RouterConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    # Without a [pay] table top-ups are off and everything else works.
    pay: PayConfig = Field(default_factory=lambda: PayConfig(enabled=False))
    products: Annotated[tuple[ProductConfig, ...], AsTuple] = ()
    quota: QuotaConfig = Field(default_factory=QuotaConfig)
    codes: CodesConfig = Field(default_factory=CodesConfig)
    plans: PlansConfig = Field(default_factory=PlansConfig)
    invites: InvitesConfig = Field(default_factory=InvitesConfig)
    # [tiers.NAME]: what a tier gives besides its models (rules.tier_models).
    tiers: Annotated[Mapping[str, TierConfig], Frozen] = Field(default_factory=empty_map)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    words: WordsConfig = Field(default_factory=WordsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
    companion: CompanionConfig = Field(default_factory=CompanionConfig)
    answer_page: AnswerPageConfig = Field(default_factory=AnswerPageConfig)
    ai_label: AiLabelConfig = Field(default_factory=AiLabelConfig)
    # The folder the config file lives in: relative paths in it are relative to this (set by the
    # loader, never by the file).
    base_dir: str = "."

    def resolve_path(self, path: str) -> Path:
        return resolve(Path(self.base_dir), path)

    @model_validator(mode="after")
    def _unit(self) -> Config:
        """The credit unit's one name ([texts] unit) goes into every text that says `{unit}`."""
        for name in type(self).model_fields:
            old = getattr(self, name)
            if (new := with_unit(old, self.texts.unit)) is not old:
                object.__setattr__(self, name, new)  # frozen: set once, while it is being built
        return self

    @model_validator(mode="after")
    def _answer_page(self) -> Config:
        """A reply that links to the answer page must still have room for the answer itself."""
        if not self.server.public_url:
            return self
        link = self.server.public_url.rstrip("/") + "/a/" + "x" * 32
        label = self.ai_label.text if isinstance(self.ai_label.text, str) else ""
        note = max(len(self.texts.new_question_started.encode()), len(self.texts.new_question_pushed.encode()))
        for key in ("link_text", "thinking_text"):
            tail = getattr(self.answer_page, key).format(link=link)
            if len(tail.encode()) + len(label.encode()) + note + 3 > self.wechat.max_reply_bytes // 2:
                raise problem(f"answer_page.{key}", "with the link, the AI label and a note it must leave half of"
                                                    " wechat.max_reply_bytes for the answer: make it shorter")
        return self

    @model_validator(mode="after")
    def _channels(self) -> Config:
        if not self.channels:
            raise problem("channels", "at least one [[channels]] entry is required")
        seen: set[str] = set()
        for i, ch in enumerate(self.channels):
            if ch.name in seen:
                raise problem(f"channels[{i}].name", f"duplicate channel name {ch.name!r}")
            seen.add(ch.name)
        return self

    @model_validator(mode="after")
    def _models(self) -> Config:
        """Aliases name nothing else; the default model and every tier's models exist."""
        names = set(self.models) | {m for ch in self.channels for m in ch.models}
        aliases: dict[str, str] = {}
        for name, m in self.models.items():
            for i, alias in enumerate(m.aliases):
                if alias in names or alias in aliases:
                    raise problem(f"models.{name}.aliases[{i}]", f"{alias!r} already names a model or an alias")
                aliases[alias] = name
        served = {m for ch in self.channels if ch.enabled for m in ch.models}
        default = self.chat.default_model
        if aliases.get(default, default) not in served:
            raise problem("chat.default_model", f"{default!r} is served by no enabled channel")
        known = names | set(aliases)
        for tier, models in self.rules.tier_models.items():
            for i, model in enumerate(models):
                if model not in known:
                    raise problem(f"rules.tier_models.{tier}[{i}]", f"unknown model {model!r}")
        return self

    @model_validator(mode="after")
    def _media(self) -> Config:
        """Voice needs a speech channel that exists and media/get's credentials; a picture's wait fits
        inside one delivery."""
        s, w = self.speech, self.wechat
        if s.channel:
            if s.channel not in {ch.name for ch in self.channels}:
                raise problem("speech.channel", f"{s.channel!r} names no [[channels]] entry")
            if not (w.app_id and w.app_secret):
                missing = "wechat.app_secret" if w.app_id else "wechat.app_id"
                raise problem(missing, "is required when speech.channel is set (voice is downloaded with media/get)")
        if any(m.vision for m in self.models.values()) and self.media.picture_wait >= w.window - w.reply_margin:
            raise problem("media.picture_wait", "must be shorter than wechat.window - wechat.reply_margin")
        return self

    @property
    def decide_lease(self) -> float:
        """[chat] decide_lease, or its default: 0.4 x wechat.window."""
        return self.chat.decide_lease if self.chat.decide_lease is not None else 0.4 * self.wechat.window

    @model_validator(mode="after")
    def _deciding(self) -> Config:
        """A retry comes one window after the delivery before it: the lease must run out by then."""
        if self.chat.decide_lease is not None and self.chat.decide_lease >= self.wechat.window:
            raise problem("chat.decide_lease", "must be shorter than wechat.window (a retry must be able to take over)")
        return self

    @model_validator(mode="after")
    def _products(self) -> Config:
        seen: set[str] = set()
        for i, pr in enumerate(self.products):
            if pr.id in seen:
                raise problem(f"products[{i}].id", f"duplicate product id {pr.id!r}")
            seen.add(pr.id)
            if pr.tier and self.rules.tier_models and pr.tier not in self.rules.tier_models:
                raise problem(f"products[{i}].tier", f"{pr.tier!r} is not a tier in rules.tier_models")
        for tier in self.tiers:
            if self.rules.tier_models and tier not in self.rules.tier_models:
                raise problem(f"tiers.{tier}", f"{tier!r} is not a tier in rules.tier_models")
        return self

    @model_validator(mode="after")
    def _ports(self) -> Config:
        if self.metrics.port and self.metrics.port == self.server.port:
            raise problem("metrics.port", "must differ from server.port (0 serves /metrics on the main server)")
        return self

    @model_validator(mode="after")
    def _oauth(self) -> Config:
        if self.companion.oauth:
            if not (self.wechat.app_id and self.wechat.app_secret):
                missing = "wechat.app_secret" if self.wechat.app_id else "wechat.app_id"
                raise problem(missing, "is required when companion.oauth is on")
            if not self.server.public_url.startswith(("http://", "https://")):
                raise problem("server.public_url", "must be the page's http(s) URL when companion.oauth is on")
        return self
