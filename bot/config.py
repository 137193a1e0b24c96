"""The one validated, frozen configuration object, built at start-up.

Nothing else in mpgpt reads environment variables: secrets come in here and nowhere else.
A bad file raises ConfigError whose message names the key (``wechat.mode``) and the problem,
so the command line can print one line and exit non-zero.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import re
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(Exception):
    """A configuration problem, with the dotted key it concerns."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    # The address followers reach the companion page at (used in links in chat replies).
    public_url: str = ""
    # WeChat's messages are a few hundred bytes; anything far larger is not WeChat.
    max_body_bytes: int = 64 * 1024
    # "auto": uvloop when installed (it is a dependency off Windows), else asyncio's own loop.
    event_loop: str = "auto"


@dataclass(frozen=True)
class StorageConfig:
    path: str = "data/mpgpt.db"
    busy_timeout_ms: int = 5000
    # `mpgpt prune` deletes inbound messages, answers and conversations older than this many days.
    retention_days: int = 90


@dataclass(frozen=True)
class WechatConfig:
    token: str = ""
    app_id: str = ""
    app_secret: str = ""
    encoding_aes_key: str = ""
    mode: str = "passive"
    api_base: str = "https://api.weixin.qq.com"
    # WeChat sends no freshness guarantee; we refuse signatures older (or newer) than this.
    timestamp_tolerance: float = 300.0
    # WeChat waits `window` seconds for each delivery and delivers a message `deliveries` times.
    window: float = 5.0
    deliveries: int = 3
    # On the last delivery we answer this long before the window closes, with what we have.
    reply_margin: float = 0.6
    max_reply_bytes: int = 2000
    # Customer-service messages allowed per user message (WeChat's rule since 2023).
    push_budget: int = 5
    api_timeout: float = 5.0
    token_refresh_margin: float = 300.0


@dataclass(frozen=True)
class ChatConfig:
    default_model: str = "gpt-4o-mini"
    system_prompt: str = "你是一个乐于助人的助手。回答简洁，使用纯文本，不要使用 Markdown。"
    generation_deadline: float = 120.0
    conversation_idle: float = 1800.0
    max_turns: int = 10
    max_context_tokens: int = 3000
    # Cross-process waits poll storage this often; same-process waits are woken at once.
    poll_interval: float = 0.1
    # The growing answer is written to storage this often, so another process (or a restart)
    # can give the user what is complete so far.
    progress_flush_interval: float = 0.5
    # A generating process renews its lease; a lease left to expire means the process died.
    lease_seconds: float = 30.0
    recovery_interval: float = 5.0
    # Followers may send `key sk-...` to use their own OpenAI-compatible key (no credits charged);
    # it is stored encrypted with key_secret (or MPGPT_CHAT_KEY_SECRET), at least 16 characters.
    allow_own_keys: bool = False
    key_secret: str = ""


@dataclass(frozen=True)
class CommandsConfig:
    more: tuple[str, ...] = ("继续",)
    reset: tuple[str, ...] = ("新对话",)
    help: tuple[str, ...] = ("帮助",)
    model: tuple[str, ...] = ("模型",)
    key: tuple[str, ...] = ("key", "KEY", "Key")
    balance: tuple[str, ...] = ("余额",)
    # Ask for a 6-digit code to log in on the companion page.
    login: tuple[str, ...] = ("登录",)


@dataclass(frozen=True)
class TextsConfig:
    welcome: str = "感谢关注！直接发送文字即可和 AI 对话。发送「帮助」查看用法。"
    help: str = (
        "直接发送文字即可提问。\n"
        "「继续」获取较长回答的后续内容\n"
        "「新对话」开始新的话题\n"
        "「帮助」显示本说明"
    )
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
    topup_done: str = "充值成功，已到账 {credits} 点额度。感谢支持！"
    model_unavailable: str = "你选择的模型 {model} 暂时不可用，发送「模型」查看可用的模型。"
    model_list: str = "可用的模型（发送「模型 名称」切换）：\n{models}"
    model_switched: str = "已切换到 {model}，之后的提问将使用它。"
    model_no_such: str = "没有名为「{model}」的模型。发送「模型」查看可用的模型。"
    own_key_off: str = "本公众号没有开放使用自己的 API key。"
    own_key_saved: str = "已保存你的 API key，之后的提问将使用它，不消耗额度。发送「key 删除」可移除。"
    own_key_removed: str = "已删除你的 API key，之后的提问将使用公众号的额度。"
    own_key_none: str = "你还没有保存 API key。发送「key sk-…」保存。"
    own_key_bad: str = "这看起来不是一个有效的 API key，请发送「key sk-…」。"
    own_key_rejected: str = "你的 API key 被服务商拒绝了，请检查后重新发送「key sk-…」，或发送「key 删除」改用公众号的额度。"


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    provider: str
    api_key: str = ""
    base_url: str = ""
    models: tuple[str, ...] = ()
    # Routing: the highest priority tier with a usable channel serves; weights share a tier.
    priority: int = 0
    weight: int = 1
    enabled: bool = True
    connect_timeout: float = 5.0
    # No first token within this long: the channel failed (before the first token we fail over).
    first_token_timeout: float = 30.0
    total_timeout: float = 120.0
    # Concurrent streams this channel opens at most; a full channel is skipped by the router.
    max_streams: int = 64


@dataclass(frozen=True)
class ModelConfig:
    """One [models.NAME] table: what followers see and what a question costs."""

    display_name: str = ""
    aliases: tuple[str, ...] = ()
    # Credits per question (the credits issue charges it).
    cost: int = 1
    context_tokens: int = 8192
    max_output_tokens: int = 2048


@dataclass(frozen=True)
class RouterConfig:
    # A channel that fails `breaker_failures` times within `breaker_window` seconds is left alone for
    # `breaker_cooldown` seconds; then one probe request decides whether it is healthy again.
    breaker_failures: int = 3
    breaker_window: float = 60.0
    breaker_cooldown: float = 30.0
    # A 429 rests the channel this long; it is not a breaker failure and never disables it.
    rate_limit_cooldown: float = 10.0
    # Channels tried for one question at most (never the same channel twice).
    max_attempts: int = 3
    # Threads shared by all zhipuai channels (its SDK streams synchronously).
    zhipuai_threads: int = 16
    # The OpenAI-compatible endpoint a follower's own key is used with.
    own_key_base_url: str = "https://api.openai.com/v1"
    # How often (seconds) a running router re-reads the disabled channels from storage, so that
    # `mpgpt channels enable|disable` reaches every server process.
    disabled_sync_interval: float = 5.0


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    # "auto": console when stderr is a terminal, JSON otherwise.
    format: str = "auto"


@dataclass(frozen=True)
class PayConfig:
    """WeChat Pay API v3 (direct merchant). A [pay] table switches top-ups on."""

    enabled: bool = True
    mchid: str = ""
    app_id: str = ""
    api_base: str = "https://api.mch.weixin.qq.com"
    private_key_path: str = ""
    cert_serial_no: str = ""
    apiv3_key: str = ""
    # Public-key mode (new merchants): WeChat Pay's public key and its id PUB_KEY_ID_...
    public_key_path: str = ""
    public_key_id: str = ""
    # Certificate mode: platform certificates are kept here (fetched from /v3/certificates if empty).
    cert_dir: str = ""
    notify_url: str = ""
    order_expiry: float = 1800.0
    # Pending orders older than this are queried, in case their notify was lost.
    query_after: float = 60.0
    job_interval: float = 60.0
    # The official SDKs refuse notifies whose timestamp is further off than this.
    notify_tolerance: float = 300.0
    api_timeout: float = 10.0


@dataclass(frozen=True)
class ProductConfig:
    id: str
    name: str
    credits: int
    price_fen: int
    enabled: bool = True


@dataclass(frozen=True)
class QuotaConfig:
    # Credits granted once, on a follower's first message (0: none).
    trial_credits: int = 10
    # Free credits per calendar day in `timezone`; they do not accumulate (0: none).
    daily_free: int = 3
    timezone: str = "Asia/Shanghai"


# The rules a question passes before any credit is reserved (bot/rules/), in the order they run.
RULE_NAMES = ("whitelist", "ratelimit", "status", "models", "words", "credits")


@dataclass(frozen=True)
class RefusalTextsConfig:
    """What the user reads when a rule refuses (placeholders in braces), and the 余额 reply."""

    rate_limited: str = "提问太频繁啦，请稍等一分钟再问。"
    frozen: str = "你的账号已被暂停使用，如有疑问请联系公众号客服。"
    model_not_allowed: str = "你当前的账号等级不能使用模型 {model}，请换用其他模型。"
    model_unknown: str = "暂不支持模型 {model}，请换用其他模型。"
    sensitive_question: str = "抱歉，这个问题涉及不适宜讨论的内容，换个问题试试吧。"
    no_credits: str = "积分不足：本次提问需要 {cost} 积分，你还有 {balance} 积分。{topup}"
    answer_withheld: str = "抱歉，这个回答包含不适宜的内容，已被隐藏。换个问题试试吧。"
    balance: str = "积分余额：{balance}\n其中今日免费：{daily}（每天 {daily_free}，当天有效）\n{topup}"
    # Shown in the two texts above when server.public_url is set.
    topup: str = "充值请打开：{url}"


@dataclass(frozen=True)
class RulesConfig:
    order: tuple[str, ...] = RULE_NAMES
    # Questions per user per `rate_window` seconds, counted across every process.
    rate_limit: int = 6
    rate_window: float = 60.0
    # Tier -> the models it may use. Empty: every model a channel serves, for every tier.
    tier_models: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: types.MappingProxyType({}))
    texts: RefusalTextsConfig = field(default_factory=RefusalTextsConfig)


@dataclass(frozen=True)
class WordListConfig:
    """One sensitive-word dictionary: a UTF-8 file, one word a line, # comments."""

    path: str
    # block: refuse the question (and treat the answer per words.answer_action); mask: star it out.
    action: str = "block"
    # The name logs use (never the words themselves); the file's stem when empty.
    name: str = ""


@dataclass(frozen=True)
class WordsConfig:
    dictionaries: tuple[WordListConfig, ...] = ()
    # Harmless words that contain a listed one (大麻烦 contains 大麻): a match inside them is no match.
    exceptions: tuple[str, ...] = ()
    exceptions_file: str = ""
    # A block-list word in an answer: "mask" it or "withhold" the whole answer.
    answer_action: str = "mask"
    mask_char: str = "*"
    # Dictionary files are checked for changes at most this often (seconds); 0: only on reload().
    reload_interval: float = 10.0


@dataclass(frozen=True)
class MetricsConfig:
    """GET /metrics for Prometheus (issue 6)."""

    enabled: bool = True
    # Prometheus must send `Authorization: Bearer <token>`; "" serves /metrics to anyone who reaches it.
    token: str = ""
    # 0: /metrics on the main server. Otherwise its own server on host:port, e.g. reachable only
    # from inside the network, and the main server does not serve it.
    port: int = 0
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class AnalyticsConfig:
    """Companion-page analytics: the tracker's POST /api/track and how long its events are kept."""

    enabled: bool = True
    # Events older than this are deleted by `mpgpt prune`.
    retention_days: int = 90
    # Events accepted per client IP per `rate_window` seconds (each process counts its own).
    rate_limit: int = 120
    rate_window: float = 60.0
    max_body_bytes: int = 4096
    # Accepted events are answered at once and written together this often.
    flush_interval: float = 1.0
    # Events waiting to be written at most; beyond it new ones are dropped (and counted).
    max_queue: int = 10000
    # Behind a reverse proxy: the header holding the client's address (e.g. "X-Real-IP"); "" = the peer.
    client_ip_header: str = ""


@dataclass(frozen=True)
class CompanionConfig:
    """The companion page (web_companion/): code login, session cookies, web OAuth, brute-force limits."""

    # Signs session cookies (at least 32 characters); empty: one is generated once and kept in storage.
    session_secret: str = ""
    session_days: float = 7.0
    # Inside WeChat's browser, log in without a code through web OAuth snsapi_base (verified service
    # accounts only; needs wechat.app_id, wechat.app_secret and server.public_url).
    oauth: bool = False
    # A login code lives this long (seconds) and can be used once.
    login_code_ttl: float = 300.0
    # Wrong codes allowed per client IP, and over all clients, within `failure_window` seconds (counted
    # in storage, so across processes); past either limit /api/login answers 429 until old ones age out.
    ip_failures: int = 10
    global_failures: int = 100
    failure_window: float = 600.0
    # Behind a reverse proxy: the header holding the client's address (e.g. "X-Real-IP"; of a list,
    # the last entry counts); "" = the peer address.
    client_ip_header: str = ""
    # The reply to the login command; placeholders {code}, {minutes}, {url}.
    login_text: str = "你的登录码：{code}\n{minutes} 分钟内有效，仅可使用一次。请在页面中输入：{url}"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    wechat: WechatConfig = field(default_factory=WechatConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    texts: TextsConfig = field(default_factory=TextsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    channels: tuple[ChannelConfig, ...] = ()
    models: Mapping[str, ModelConfig] = field(default_factory=lambda: types.MappingProxyType({}))
    router: RouterConfig = field(default_factory=RouterConfig)
    # Without a [pay] table top-ups are off and everything else works.
    pay: PayConfig = field(default_factory=lambda: PayConfig(enabled=False))
    products: tuple[ProductConfig, ...] = ()
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    words: WordsConfig = field(default_factory=WordsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    companion: CompanionConfig = field(default_factory=CompanionConfig)
    # The folder the config file lives in: relative paths in it are relative to this.
    base_dir: str = "."

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


# Scalar keys that may come from the environment instead of the file (secrets first of all).
_ENV_KEYS = {
    "MPGPT_WECHAT_TOKEN": ("wechat", "token"),
    "MPGPT_WECHAT_APP_ID": ("wechat", "app_id"),
    "MPGPT_WECHAT_APP_SECRET": ("wechat", "app_secret"),
    "MPGPT_WECHAT_ENCODING_AES_KEY": ("wechat", "encoding_aes_key"),
    "MPGPT_SERVER_HOST": ("server", "host"),
    "MPGPT_SERVER_PORT": ("server", "port"),
    "MPGPT_STORAGE_PATH": ("storage", "path"),
    "MPGPT_CHAT_KEY_SECRET": ("chat", "key_secret"),
    "MPGPT_PAY_MCHID": ("pay", "mchid"),
    "MPGPT_PAY_APIV3_KEY": ("pay", "apiv3_key"),
    "MPGPT_PAY_PRIVATE_KEY_PATH": ("pay", "private_key_path"),
    "MPGPT_PAY_CERT_SERIAL_NO": ("pay", "cert_serial_no"),
    "MPGPT_PAY_PUBLIC_KEY_PATH": ("pay", "public_key_path"),
    "MPGPT_PAY_PUBLIC_KEY_ID": ("pay", "public_key_id"),
    "MPGPT_METRICS_TOKEN": ("metrics", "token"),
    "MPGPT_COMPANION_SESSION_SECRET": ("companion", "session_secret"),
}
_PROVIDER_KEY_ENV = {"openai": "OPENAI_API_KEY", "zhipuai": "ZHIPUAI_API_KEY"}
PROVIDERS = ("openai", "zhipuai")


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a list of strings" if typing.get_origin(tp) is tuple else str(tp)


def _convert(key: str, tp: Any, value: Any) -> Any:
    """Check one value against its declared type; the error names the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, "must be a table")
        return _build(tp, value, key)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list (got {type(value).__name__})")
        return tuple(_convert(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin in (dict, Mapping, collections.abc.Mapping):
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(key, "must be a table")
        return types.MappingProxyType({k: _convert(f"{key}.{k}", val_tp, v) for k, v in value.items()})
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number (got {value!r})")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer (got {value!r})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false (got {value!r})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (got {value!r})")
        return value
    raise ConfigError(key, f"unsupported type {tp!r}")  # pragma: no cover - a programming error


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in names or k == "base_dir":
            raise ConfigError(key, "unknown key")
        kwargs[k] = _convert(key, hints[k], v)
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}.{f.name}" if prefix else f.name, "is required")
    return cls(**kwargs)


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in _ENV_KEYS.items():
        if var in env:
            if section == "pay" and not isinstance(data.get("pay"), dict):
                continue  # pay secrets in the environment do not switch pay on; a [pay] table does
            value: Any = env[var]
            if key == "port":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"{section}.{key}", f"{var} must be an integer (got {value!r})") from None
            data.setdefault(section, {})[key] = value
    for i, ch in enumerate(data.get("channels", []) or []):
        if not isinstance(ch, dict) or ch.get("api_key"):
            continue
        name = str(ch.get("name", i)).upper().replace("-", "_")
        own = env.get(f"MPGPT_CHANNEL_{name}_API_KEY")
        shared = env.get(_PROVIDER_KEY_ENV.get(str(ch.get("provider")), ""), "")
        if own or shared:
            ch["api_key"] = own or shared


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(key, f"must be greater than 0 (got {value})")


def _validate(cfg: Config) -> None:
    w = cfg.wechat
    if w.mode not in ("passive", "active"):
        raise ConfigError("wechat.mode", f"must be 'passive' or 'active' (got {w.mode!r})")
    if not w.token:
        raise ConfigError("wechat.token", "is required (or set MPGPT_WECHAT_TOKEN)")
    if w.encoding_aes_key:
        if len(w.encoding_aes_key) != 43:
            raise ConfigError("wechat.encoding_aes_key", "must be the 43 characters WeChat shows, or \"\" for plaintext mode")
        if not w.app_id:
            raise ConfigError("wechat.app_id", "is required when wechat.encoding_aes_key is set")
    if w.mode == "active" and not (w.app_id and w.app_secret):
        raise ConfigError("wechat.app_secret" if w.app_id else "wechat.app_id", "is required in active mode")
    if not w.api_base.startswith(("http://", "https://")):
        raise ConfigError("wechat.api_base", "must be an http(s) URL")
    for name in ("timestamp_tolerance", "window", "reply_margin", "api_timeout"):
        _positive(f"wechat.{name}", getattr(w, name))
    if w.reply_margin >= w.window:
        raise ConfigError("wechat.reply_margin", "must be smaller than wechat.window")
    if w.deliveries < 1:
        raise ConfigError("wechat.deliveries", "must be at least 1")
    if not 200 <= w.max_reply_bytes <= 2048:
        raise ConfigError("wechat.max_reply_bytes", "must be between 200 and 2048")
    if not 1 <= w.push_budget <= 5:
        raise ConfigError("wechat.push_budget", "must be between 1 and 5")
    c = cfg.chat
    for name in ("generation_deadline", "conversation_idle", "poll_interval", "progress_flush_interval",
                 "lease_seconds", "recovery_interval"):
        _positive(f"chat.{name}", getattr(c, name))
    for name in ("max_turns", "max_context_tokens"):
        _positive(f"chat.{name}", getattr(c, name))
    _positive("storage.retention_days", cfg.storage.retention_days)
    if not 1 <= cfg.server.port <= 65535:
        raise ConfigError("server.port", "must be between 1 and 65535")
    if cfg.server.event_loop not in ("auto", "uvloop", "asyncio"):
        raise ConfigError("server.event_loop", f"must be 'auto', 'uvloop' or 'asyncio' (got {cfg.server.event_loop!r})")
    if cfg.log.format not in ("auto", "json", "console"):
        raise ConfigError("log.format", "must be 'auto', 'json' or 'console'")
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level", "must be debug, info, warning or error")
    if c.allow_own_keys and len(c.key_secret) < 16:
        raise ConfigError("chat.key_secret", "must be at least 16 characters when chat.allow_own_keys is on"
                                             " (or set MPGPT_CHAT_KEY_SECRET)")
    if not cfg.channels:
        raise ConfigError("channels", "at least one [[channels]] entry is required")
    seen: set[str] = set()
    for i, ch in enumerate(cfg.channels):
        key = f"channels[{i}]"
        if ch.name in seen:
            raise ConfigError(f"{key}.name", f"duplicate channel name {ch.name!r}")
        seen.add(ch.name)
        if ch.provider not in PROVIDERS:
            raise ConfigError(f"{key}.provider", f"must be one of {', '.join(PROVIDERS)} (got {ch.provider!r})")
        if not ch.api_key:
            env = _PROVIDER_KEY_ENV[ch.provider]
            raise ConfigError(f"{key}.api_key", f"is required (or set {env})")
        if not ch.models:
            raise ConfigError(f"{key}.models", "must list at least one model")
        _validate_channel_routing(key, ch)
    aliases = _validate_models(cfg)
    served = {m for ch in cfg.channels if ch.enabled for m in ch.models}
    if aliases.get(c.default_model, c.default_model) not in served:
        raise ConfigError("chat.default_model", f"{c.default_model!r} is served by no enabled channel")
    _validate_router(cfg.router)
    _validate_products(cfg.products)
    if cfg.pay.enabled:
        _validate_pay(cfg)
    _validate_quota(cfg.quota)
    _validate_rules(cfg)
    _validate_words(cfg)
    _validate_metrics(cfg)
    _validate_analytics(cfg.analytics)
    _validate_companion(cfg)


def _validate_companion(cfg: Config) -> None:
    c = cfg.companion
    if c.session_secret and len(c.session_secret) < 32:
        raise ConfigError("companion.session_secret", "must be at least 32 characters (or empty: generated once)")
    for name in ("session_days", "login_code_ttl", "ip_failures", "global_failures", "failure_window"):
        _positive(f"companion.{name}", getattr(c, name))
    if c.oauth:
        if not (cfg.wechat.app_id and cfg.wechat.app_secret):
            missing = "wechat.app_secret" if cfg.wechat.app_id else "wechat.app_id"
            raise ConfigError(missing, "is required when companion.oauth is on")
        if not cfg.server.public_url.startswith(("http://", "https://")):
            raise ConfigError("server.public_url", "must be the page's http(s) URL when companion.oauth is on")
    try:
        c.login_text.format(code="000000", minutes=5, url="")
    except (KeyError, IndexError) as e:
        raise ConfigError("companion.login_text", f"unknown placeholder {e} (allowed: code, minutes, url)") from None
    except ValueError as e:
        raise ConfigError("companion.login_text", f"bad braces: {e}") from None
    if "{code}" not in c.login_text:
        raise ConfigError("companion.login_text", "must contain {code}")
    for i, word in enumerate(cfg.commands.login):
        if not word.strip():
            raise ConfigError(f"commands.login[{i}]", "must not be empty")


def _validate_channel_routing(key: str, ch: ChannelConfig) -> None:
    if ch.weight < 1:
        raise ConfigError(f"{key}.weight", f"must be >= 1 (got {ch.weight})")
    for name in ("connect_timeout", "first_token_timeout", "total_timeout", "max_streams"):
        _positive(f"{key}.{name}", getattr(ch, name))
    if ch.first_token_timeout > ch.total_timeout:
        raise ConfigError(f"{key}.first_token_timeout", "must not exceed total_timeout")
    if ch.base_url and not ch.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.base_url", "must be an http(s) URL")


def _validate_models(cfg: Config) -> dict[str, str]:
    """Check [models.*]; return alias -> model name."""
    aliases: dict[str, str] = {}
    names = set(cfg.models) | {m for ch in cfg.channels for m in ch.models}
    for name, m in cfg.models.items():
        key = f"models.{name}"
        if m.cost < 0:
            raise ConfigError(f"{key}.cost", "must be >= 0")
        _positive(f"{key}.context_tokens", m.context_tokens)
        _positive(f"{key}.max_output_tokens", m.max_output_tokens)
        if m.max_output_tokens >= m.context_tokens:
            raise ConfigError(f"{key}.max_output_tokens", "must be smaller than context_tokens")
        for i, alias in enumerate(m.aliases):
            if not alias.strip():
                raise ConfigError(f"{key}.aliases[{i}]", "must not be empty")
            if alias in names or alias in aliases:
                raise ConfigError(f"{key}.aliases[{i}]", f"{alias!r} already names a model or an alias")
            aliases[alias] = name
    return aliases


def _validate_router(r: RouterConfig) -> None:
    for name in ("breaker_failures", "breaker_window", "breaker_cooldown", "rate_limit_cooldown",
                 "max_attempts", "zhipuai_threads", "disabled_sync_interval"):
        _positive(f"router.{name}", getattr(r, name))
    if not r.own_key_base_url.startswith(("http://", "https://")):
        raise ConfigError("router.own_key_base_url", "must be an http(s) URL")


_PRODUCT_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _validate_products(products: tuple[ProductConfig, ...]) -> None:
    seen: set[str] = set()
    for i, pr in enumerate(products):
        key = f"products[{i}]"
        if not _PRODUCT_ID.fullmatch(pr.id):
            raise ConfigError(f"{key}.id", "must be 1-32 letters, digits, _ or -")
        if pr.id in seen:
            raise ConfigError(f"{key}.id", f"duplicate product id {pr.id!r}")
        seen.add(pr.id)
        # The name is WeChat Pay's order description: at most 127 characters.
        if not pr.name.strip() or len(pr.name) > 127:
            raise ConfigError(f"{key}.name", "must be 1-127 characters")
        _positive(f"{key}.credits", pr.credits)
        _positive(f"{key}.price_fen", pr.price_fen)


def _pem_file(cfg: Config, key: str, path: str, kind: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    p = cfg.resolve_path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(key, f"file not found: {str(p)!r}") from None
    except OSError as e:
        raise ConfigError(key, f"cannot read {str(p)!r}: {e.strerror}") from None
    try:
        load_pem_private_key(data, password=None) if kind == "private" else load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(key, f"{str(p)!r} is not a PEM {kind} key") from None


def _validate_pay(cfg: Config) -> None:
    p = cfg.pay
    for name in ("mchid", "app_id", "cert_serial_no", "private_key_path", "notify_url"):
        if not getattr(p, name):
            raise ConfigError(f"pay.{name}", "is required")
    if len(p.apiv3_key.encode()) != 32:
        raise ConfigError("pay.apiv3_key", "must be the 32-character APIv3 key (or set MPGPT_PAY_APIV3_KEY)")
    if not p.api_base.startswith(("http://", "https://")):
        raise ConfigError("pay.api_base", "must be an http(s) URL")
    _pem_file(cfg, "pay.private_key_path", p.private_key_path, "private")
    if bool(p.public_key_path) != bool(p.public_key_id):
        missing = "public_key_id" if p.public_key_path else "public_key_path"
        raise ConfigError(f"pay.{missing}", "is required with the other (public-key mode needs both)")
    if p.public_key_path:
        if not p.public_key_id.startswith("PUB_KEY_ID_"):
            raise ConfigError("pay.public_key_id", "must start with PUB_KEY_ID_")
        _pem_file(cfg, "pay.public_key_path", p.public_key_path, "public")
    url = urllib.parse.urlsplit(p.notify_url)
    loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
    if url.scheme != "https" and not (url.scheme == "http" and loopback):
        raise ConfigError("pay.notify_url", "must be an https:// URL (WeChat Pay calls only HTTPS)")
    if url.query or not url.hostname:
        raise ConfigError("pay.notify_url", "must be a full URL without a query string")
    for name in ("order_expiry", "query_after", "job_interval", "notify_tolerance", "api_timeout"):
        _positive(f"pay.{name}", getattr(p, name))


def _validate_quota(q: QuotaConfig) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    for name in ("trial_credits", "daily_free"):
        if getattr(q, name) < 0:
            raise ConfigError(f"quota.{name}", "must be >= 0 (0 switches it off)")
    try:
        ZoneInfo(q.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("quota.timezone", f"unknown time zone {q.timezone!r}") from None


_TEXT_PLACEHOLDERS = {
    "model_not_allowed": ("model",), "model_unknown": ("model",),
    "no_credits": ("cost", "balance", "paid", "daily", "daily_free", "topup"),
    "balance": ("balance", "paid", "daily", "daily_free", "topup"), "topup": ("url",),
}


def _validate_rules(cfg: Config) -> None:
    r = cfg.rules
    seen: set[str] = set()
    for i, name in enumerate(r.order):
        if name not in RULE_NAMES:
            raise ConfigError(f"rules.order[{i}]", f"unknown rule {name!r} (rules: {', '.join(RULE_NAMES)})")
        if name in seen:
            raise ConfigError(f"rules.order[{i}]", f"{name!r} is listed twice")
        seen.add(name)
    if "credits" in r.order and r.order[-1] != "credits":
        raise ConfigError("rules.order", "'credits' must come last: a later refusal would leave credits reserved")
    _positive("rules.rate_limit", r.rate_limit)
    _positive("rules.rate_window", r.rate_window)
    known = set(cfg.models) | {m for ch in cfg.channels for m in ch.models}
    known |= {a for m in cfg.models.values() for a in m.aliases}
    for tier, models in r.tier_models.items():
        for i, model in enumerate(models):
            if model not in known:
                raise ConfigError(f"rules.tier_models.{tier}[{i}]", f"unknown model {model!r}")
    if r.tier_models and "free" not in r.tier_models:
        raise ConfigError("rules.tier_models", "must list the 'free' tier (every new account starts there)")
    for f in dataclasses.fields(RefusalTextsConfig):
        allowed = _TEXT_PLACEHOLDERS.get(f.name, ())
        try:
            getattr(r.texts, f.name).format(**{k: 0 for k in allowed})
        except (KeyError, IndexError) as e:
            raise ConfigError(f"rules.texts.{f.name}", f"unknown placeholder {e} (allowed: {', '.join(allowed) or 'none'})") from None
        except ValueError as e:
            raise ConfigError(f"rules.texts.{f.name}", f"bad braces: {e}") from None


def _readable_file(cfg: Config, key: str, path: str) -> None:
    p = cfg.resolve_path(path)
    if not p.is_file():
        raise ConfigError(key, f"file not found: {str(p)!r}")
    try:
        p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(key, f"cannot read {str(p)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{str(p)!r} is not UTF-8 text") from None


def _validate_words(cfg: Config) -> None:
    w = cfg.words
    names: set[str] = set()
    for i, d in enumerate(w.dictionaries):
        key = f"words.dictionaries[{i}]"
        if d.action not in ("block", "mask"):
            raise ConfigError(f"{key}.action", f"must be 'block' or 'mask' (got {d.action!r})")
        _readable_file(cfg, f"{key}.path", d.path)
        name = d.name or Path(d.path).stem
        if name in names:
            raise ConfigError(f"{key}.name", f"two dictionaries are called {name!r}; give one a name")
        names.add(name)
    if w.exceptions_file:
        _readable_file(cfg, "words.exceptions_file", w.exceptions_file)
    if w.answer_action not in ("mask", "withhold"):
        raise ConfigError("words.answer_action", f"must be 'mask' or 'withhold' (got {w.answer_action!r})")
    if len(w.mask_char) != 1:
        raise ConfigError("words.mask_char", "must be one character")
    if w.reload_interval < 0:
        raise ConfigError("words.reload_interval", "must be >= 0 (0: reload only when asked)")


def _validate_metrics(cfg: Config) -> None:
    m = cfg.metrics
    if not 0 <= m.port <= 65535:
        raise ConfigError("metrics.port", f"must be 0 (the main server) or a port number (got {m.port})")
    if m.port and m.port == cfg.server.port:
        raise ConfigError("metrics.port", "must differ from server.port (0 serves /metrics on the main server)")
    if m.port and not m.host:
        raise ConfigError("metrics.host", "is required when metrics.port is set")
    if m.token and (m.token != m.token.strip() or len(m.token) < 16):
        raise ConfigError("metrics.token", "must be at least 16 characters without surrounding spaces")


def _validate_analytics(a: AnalyticsConfig) -> None:
    for name in ("retention_days", "rate_limit", "rate_window", "flush_interval", "max_queue"):
        _positive(f"analytics.{name}", getattr(a, name))
    if not 256 <= a.max_body_bytes <= 65536:
        raise ConfigError("analytics.max_body_bytes", "must be between 256 and 65536")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, check and freeze the configuration; raise ConfigError on the first problem."""
    env = os.environ if env is None else env
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read config file {str(p)!r}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError("", f"{p}: not valid TOML: {e}") from None
    return config_from_dict(data, env=env, base_dir=str(p.resolve().parent))


def config_from_dict(data: dict[str, Any], env: Mapping[str, str] | None = None, base_dir: str = ".") -> Config:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if isinstance(data.get("channels"), list):
        data["channels"] = [dict(c) if isinstance(c, dict) else c for c in data["channels"]]
    _apply_env(data, {} if env is None else env)
    cfg = _build(Config, data, "")
    cfg = dataclasses.replace(cfg, base_dir=base_dir)
    _validate(cfg)
    return cfg
