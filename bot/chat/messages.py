"""The plain message object the WeChat edge hands to the chat service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from storage.redact import short_user

Kind = Literal["text", "voice", "image", "subscribe", "unsubscribe", "event", "other"]


@dataclass(frozen=True, slots=True)
class Inbound:
    kind: Kind
    openid: str
    # MsgId for messages; sender + CreateTime + event for events (WeChat's own de-duplication keys)
    msg_key: str
    # text content, or a voice message's recognised text ("" when recognition gave nothing)
    content: str = ""
    event_key: str = ""
    # voice and image: where WeChat keeps the file (media/get, 3 days); image: its PicUrl too
    media_id: str = ""
    pic_url: str = ""
    # a voice message WeChat transcribed itself (a non-empty <Recognition>)
    recognized: bool = False

    @property
    def short_user(self) -> str:
        """Enough of the openid to follow one user through logs without logging the whole id."""
        return short_user(self.openid)
