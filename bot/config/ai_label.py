"""[ai_label]: the explicit label on generated text (《人工智能生成合成内容标识办法》, in force since 2025-09-01)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from bot.config.base import Section


class AiLabelConfig(Section):
    # Shown once per answer in each place it is read: in WeChat (under the answer's last part, or
    # above its first), on the answer page and in the web chat. Turning it off takes an explicit
    # `false`; an empty text is refused so that a typo cannot remove it.
    text: str | bool = "内容由 AI 生成"
    # "end": a line under the answer; "start": a line above it.
    position: Literal["end", "start"] = "end"

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | bool) -> str | bool:
        if value is True:
            raise ValueError("must be the label's text, or false to turn the label off")
        if isinstance(value, str) and not value.strip():
            raise ValueError('must not be empty (write false to turn the label off)')
        if isinstance(value, str) and len(value) > 60:
            raise ValueError("must be at most 60 characters (a short line)")
        return value
