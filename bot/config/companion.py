"""[companion]: the page's login (one-time links, desktop codes), session cookies, web OAuth, limits."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from bot.config.base import Positive, PositiveInt, Section, check_placeholders

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


class CompanionConfig(Section):
    """The companion page (web_companion/): login from chat, session cookies, web OAuth, request limits."""

    # Signs session cookies (at least 32 characters); empty: one is generated once and kept in storage.
    # Branding: the page's title (the account tab's too), the account's name as the page says it, the
    # bar's and buttons' colour and the page's background (#rrggbb; the favicon is drawn in `color`).
    title: str = Field("我的{unit}", min_length=1, max_length=40)
    account_name: str = Field("本公众号", min_length=1, max_length=40)
    color: str = "#07c160"
    background: str = "#f2f3f5"
    session_secret: str = ""
    session_days: Positive = 7.0
    # Inside WeChat's browser, log in without a code through web OAuth snsapi_base (verified service
    # accounts only; needs wechat.app_id, wechat.app_secret and server.public_url: checked in Config).
    oauth: bool = False
    # A login link (the 登录 reply) and a desktop browser's short code live this long (seconds).
    login_code_ttl: Positive = 300.0
    # `登录 CODE` messages one follower may send, and desktop codes one client address may ask for,
    # within `failure_window` seconds (in storage, so across processes). Either limit only ever stops
    # that follower or that address: there is no cap that all share.
    code_attempts: PositiveInt = 5
    ip_waits: PositiveInt = 20
    failure_window: Positive = 600.0
    # Top-up orders one follower may create within `order_window` seconds (a handed-out open order
    # counts too: each request may reach WeChat Pay).
    order_limit: PositiveInt = 10
    order_window: Positive = 600.0
    # Behind a reverse proxy: the header holding the client's address (e.g. "X-Real-IP"; of a list,
    # the last entry counts), believed only from server.trusted_proxies; "" = the peer address.
    client_ip_header: str = ""
    # The reply to the login command; placeholders {link} (the one-time link), {minutes}, {url}
    # (server.public_url), {word} (the login word). Without public_url, login_text_no_url is the reply.
    login_text: str = ("点击链接登录网页（{minutes} 分钟内有效，仅可使用一次）：\n{link}\n"
                       "在电脑上登录：打开网页，把页面上显示的「{word} 数字」发到这里。")
    # The reply to the login command while server.public_url is empty (no link to send); {minutes}, {word}.
    login_text_no_url: str = ("打开本公众号的网页（菜单里），把页面上显示的「{word} 数字」发到这里即可登录。"
                              "页面上的登录码 {minutes} 分钟内有效，过期后刷新页面获取新的。")
    login_code_done_text: str = "已登录网页，请回到浏览器继续。"
    login_code_wrong_text: str = "登录码不正确或已过期，请刷新网页获取新的登录码。"
    # placeholder {minutes}
    login_code_limited_text: str = "登录码错误次数过多，请 {minutes} 分钟后再试。"

    @field_validator("session_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters (or empty: generated once)")
        return value

    @field_validator("color", "background")
    @classmethod
    def _color(cls, value: str) -> str:
        if not _COLOR.fullmatch(value):
            raise ValueError("must be a colour as #rrggbb (e.g. #07c160)")
        return value.lower()

    @field_validator("title", "account_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.isprintable() or "{" in value.replace("{unit}", ""):
            raise ValueError("must be printable text on one line ({unit} allowed)")
        return value

    @field_validator("login_text")
    @classmethod
    def _login_text(cls, value: str) -> str:
        if err := check_placeholders(value, ("link", "minutes", "url", "word")):
            raise ValueError(err)
        if "{link}" not in value:
            raise ValueError("must contain {link}")
        return value

    @field_validator("login_text_no_url")
    @classmethod
    def _no_url_text(cls, value: str) -> str:
        if err := check_placeholders(value, ("minutes", "word")):
            raise ValueError(err)
        return value

    @field_validator("login_code_done_text", "login_code_wrong_text")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        if err := check_placeholders(value, ()):
            raise ValueError(err)
        return value

    @field_validator("login_code_limited_text")
    @classmethod
    def _limited_text(cls, value: str) -> str:
        if err := check_placeholders(value, ("minutes",)):
            raise ValueError(err)
        return value
