"""[answer_page]: the page at `{server.public_url}/a/<token>` that shows one answer live (no 继续 needed)."""

from __future__ import annotations

from pydantic import field_validator

from bot.config.base import Positive, Section, check_placeholders


class AnswerPageConfig(Section):
    """Used only when server.public_url is set; without it replies are exactly as before (继续 only)."""

    # A reply that cannot carry the whole answer (still being written, or longer than one message)
    # ends with this instead of texts.more_marker; {link} is the page's address.
    link_text: str = "（未完）点开查看完整回答：\n{link}\n也可回复「继续」获取后续。"
    # The last delivery when nothing whole is written yet (instead of texts.thinking).
    thinking_text: str = "正在思考中，点开链接实时查看回答：\n{link}\n也可稍后回复「继续」获取。"
    # While another process writes the answer, the page checks storage this often (seconds); an
    # answer written by the serving process itself is shown as it is written.
    poll_interval: Positive = 0.25
    # A page's stream quiet this long (the model still thinking) sends a comment line, so a proxy
    # in front (nginx closes after 60 s by default) keeps it open.
    keepalive: Positive = 15.0
    # The page's title (the browser's tab and WeChat's in-app browser bar).
    title: str = "AI 回答"

    @field_validator("link_text", "thinking_text")
    @classmethod
    def _link(cls, value: str) -> str:
        if err := check_placeholders(value, ("link",)):
            raise ValueError(err)
        if "{link}" not in value:
            raise ValueError("must contain {link}")
        return value
