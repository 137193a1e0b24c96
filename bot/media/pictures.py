"""Getting a follower's picture into a model request: fetched (guarded), checked, as a data URL.

WeChat gives a PicUrl (a copy on its CDN) and a MediaId (media/get, kept 3 days). The PicUrl is
tried first (no access_token, no API quota), only on the hosts the guard allows; media/get is the
fallback when there is no PicUrl or it could not be fetched. A PicUrl on a foreign host refuses the
picture outright: it was not WeChat that made it.
"""

from __future__ import annotations

import base64
import time

import aiohttp
import structlog

from bot import metrics
from bot.media.guard import HostGuard, MediaRefused, MediaUnavailable, fetch

log = structlog.get_logger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
# The first bytes of each accepted format: a content type alone is only the server's word.
_MAGIC = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png", b"GIF87a": "image/gif",
          b"GIF89a": "image/gif"}


def sniff(data: bytes) -> str | None:
    """The image type the bytes really are (JPEG, PNG, GIF, WebP), or None."""
    for magic, mime in _MAGIC.items():
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class PictureSource:
    def __init__(self, session: aiohttp.ClientSession, guard: HostGuard, api, *, max_bytes: int,
                 timeout: float) -> None:
        self.session = session
        self.guard = guard
        self.api = api  # bot.wechat.api.WeChatAPI, or None without wechat.app_secret
        self.max_bytes = max_bytes
        self.timeout = timeout

    def refusal(self, pic_url: str, media_id: str) -> str | None:
        """Why a picture message cannot be used at all (checked when it arrives), or None."""
        if pic_url:
            reason = self.guard.refusal(pic_url)
            if reason is not None:
                log.warning("media_refused", reason=reason, kind="picture")
            return reason
        if not media_id or self.api is None:
            return "no PicUrl, and media/get needs wechat.app_secret"
        return None

    async def load(self, pic_url: str, media_id: str) -> tuple[bytes, str]:
        """(bytes, image type); raises MediaRefused or MediaUnavailable."""
        started = time.perf_counter()
        try:
            data = await self._fetch(pic_url, media_id)
        except (MediaRefused, MediaUnavailable) as e:
            metrics.media_step("picture", "refused" if isinstance(e, MediaRefused) else "failed",
                               time.perf_counter() - started)
            raise
        mime = sniff(data)
        if mime is None:
            metrics.media_step("picture", "refused", time.perf_counter() - started)
            log.warning("media_refused", reason="not an image", kind="picture")
            raise MediaRefused("not an image")
        metrics.media_step("picture", "ok", time.perf_counter() - started)
        return data, mime

    async def _fetch(self, pic_url: str, media_id: str) -> bytes:
        opts = {"max_bytes": self.max_bytes, "timeout": self.timeout, "types": IMAGE_TYPES}
        if pic_url:
            try:
                data, _ = await fetch(self.session, pic_url, self.guard, **opts)
                return data
            except MediaUnavailable as e:
                if not media_id or self.api is None:
                    raise
                log.info("picture_url_failed", reason=str(e), fallback="media/get")
        if not media_id or self.api is None:
            raise MediaUnavailable("no way to fetch the picture")
        data, _ = await self.api.media_get(media_id, **opts)
        return data


class PictureUnavailable(Exception):
    """The picture a question is about cannot be had any more (expired, refused, gone)."""


class QuestionPictures:
    """The picture of a question, as the generation needs it: a data URL, fetched when asked."""

    def __init__(self, repo, source: PictureSource | None) -> None:
        self.repo = repo  # storage.pictures.PictureRepo
        self.source = source

    async def image(self, picture_id: int) -> str:
        picture = await self.repo.get(picture_id)
        if picture is None:
            raise PictureUnavailable("no such picture")
        if picture.data is not None:
            return data_url(picture.data, picture.content_type or sniff(picture.data) or "image/jpeg")
        if self.source is None:
            raise PictureUnavailable("pictures cannot be fetched")
        try:
            data, mime = await self.source.load(picture.pic_url, picture.media_id)
        except (MediaRefused, MediaUnavailable) as e:
            log.warning("picture_unavailable", reason=str(e))
            raise PictureUnavailable(str(e)) from None
        return data_url(data, mime)

    async def done(self, picture_id: int) -> None:
        await self.repo.forget_data(picture_id)
