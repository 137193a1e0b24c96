"""Active mode: WeChat's typing indicator ("对方正在输入…") while an answer is written.

WeChat's rules: only within `wechat.typing_after` seconds (30) of the follower's message, shown
`wechat.typing_lasts` seconds (15), not accepted again within that time, and cancelled by the next
message we send. So the indicator is sent when the question arrives and again each time it runs
out, while the answer is still being written and the follower's message is recent enough.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from bot.config import Config
from bot.wechat.api import WeChatAPI, WeChatAPIError
from storage.redact import short_user

log = structlog.get_logger(__name__)


class Typing:
    def __init__(self, cfg: Config, api: WeChatAPI, clock=time.time) -> None:
        self.cfg = cfg.wechat
        self.api = api
        self.clock = clock
        self._tasks: set[asyncio.Task] = set()

    def start(self, openid: str, asked_at: float, written: asyncio.Event) -> None:
        """Show the indicator to `openid` (who wrote at `asked_at`) until `written` is set."""
        if not self.cfg.typing:
            return
        task = asyncio.create_task(self._run(openid, asked_at, written), name="typing")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, openid: str, asked_at: float, written: asyncio.Event) -> None:
        while not written.is_set() and self.clock() - asked_at < self.cfg.typing_after:
            try:
                await self.api.send_typing(openid)
            except WeChatAPIError as e:
                # not worth a retry: the answer itself is what matters
                log.info("typing_refused", errcode=e.errcode, user=short_user(openid))
                return
            try:
                await asyncio.wait_for(written.wait(), self.cfg.typing_lasts)
            except TimeoutError:
                continue

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
