"""[companion]: the page's code login, session cookies, web OAuth and brute-force limits."""

from __future__ import annotations

from pydantic import field_validator

from bot.config.base import Positive, PositiveInt, Section, check_placeholders


class CompanionConfig(Section):
    """The companion page (web_companion/): code login, session cookies, web OAuth, brute-force limits."""

    # Signs session cookies (at least 32 characters); empty: one is generated once and kept in storage.
    session_secret: str = ""
    session_days: Positive = 7.0
    # Inside WeChat's browser, log in without a code through web OAuth snsapi_base (verified service
    # accounts only; needs wechat.app_id, wechat.app_secret and server.public_url: checked in Config).
    oauth: bool = False
    # A login code lives this long (seconds) and can be used once.
    login_code_ttl: Positive = 300.0
    # Wrong codes allowed per client IP, and over all clients, within `failure_window` seconds (counted
    # in storage, so across processes); past either limit /api/login answers 429 until old ones age out.
    ip_failures: PositiveInt = 10
    global_failures: PositiveInt = 100
    failure_window: Positive = 600.0
    # Behind a reverse proxy: the header holding the client's address (e.g. "X-Real-IP"; of a list,
    # the last entry counts); "" = the peer address.
    client_ip_header: str = ""
    # The reply to the login command; placeholders {code}, {minutes}, {url}.
    login_text: str = "你的登录码：{code}\n{minutes} 分钟内有效，仅可使用一次。请在页面中输入：{url}"

    @field_validator("session_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters (or empty: generated once)")
        return value

    @field_validator("login_text")
    @classmethod
    def _login_text(cls, value: str) -> str:
        if err := check_placeholders(value, ("code", "minutes", "url")):
            raise ValueError(err)
        if "{code}" not in value:
            raise ValueError("must contain {code}")
        return value
