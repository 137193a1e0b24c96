"""[media]: fetching followers' pictures and voice — from where, how much, how long."""

from __future__ import annotations

import re

from pydantic import model_validator

from bot.config.base import Positive, PositiveInt, Section, Strs
from bot.config.errors import problem

_HOST = re.compile(r"\.?[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class MediaConfig(Section):
    # Hosts a PicUrl may point at (exact names, or ".suffix"); wechat.api_base is always allowed.
    hosts: Strs = ("mmbiz.qpic.cn", "mmbiz.qlogo.cn", "mmsns.qpic.cn")
    # A picture larger than this is refused (the web upload too).
    max_picture_bytes: PositiveInt = 5_000_000
    timeout: Positive = 5.0
    # A picture alone waits this long for the follower's next text; then `picture_prompt` is asked.
    picture_wait: Positive = 3.0
    picture_prompt: str = "描述这张图片"
    # What the conversation keeps in place of an earlier picture (never its bytes).
    picture_placeholder: str = "[图片]"

    @model_validator(mode="after")
    def _hosts(self) -> MediaConfig:
        for i, host in enumerate(self.hosts):
            if not _HOST.fullmatch(host):
                raise problem(f"hosts[{i}]", f"must be a host name (or .suffix), optionally :port (got {host!r})")
        if not self.picture_prompt.strip():
            raise problem("picture_prompt", "must not be empty")
        return self
