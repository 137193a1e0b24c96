"""Hearing a voice message: media/get download, ffmpeg conversion, transcription.

WeChat's own Recognition is being retired and often arrives empty, so a voice message can be
heard by mpgpt itself. Each step is bounded ([speech] and [media] timeouts) and each failure is a
named outcome the chat service turns into a polite reply; nothing here raises anything else.
"""

from __future__ import annotations

import time

import structlog

from bot import metrics
from bot.media.convert import ConversionFailed, ConverterMissing, to_mp3
from bot.media.guard import MediaRefused, MediaUnavailable
from bot.providers.base import ProviderError
from bot.providers.speech import SpeechChannel

log = structlog.get_logger(__name__)

# What media/get answers for voice: AMR (audio/amr), Speex for HD voice; some answers are generic.
VOICE_TYPES = ("audio/", "voice/", "application/octet-stream")


class NotHeard(Exception):
    """The voice could not be turned into text; `missing_converter` when ffmpeg is not installed."""

    def __init__(self, reason: str, missing_converter: bool = False) -> None:
        super().__init__(reason)
        self.missing_converter = missing_converter


class Listener:
    def __init__(self, api, speech: SpeechChannel, *, ffmpeg: str, convert_timeout: float, max_bytes: int,
                 download_timeout: float) -> None:
        self.api = api  # bot.wechat.api.WeChatAPI (media/get with the shared token)
        self.speech = speech
        self.ffmpeg = ffmpeg
        self.convert_timeout = convert_timeout
        self.max_bytes = max_bytes
        self.download_timeout = download_timeout

    async def hear(self, media_id: str) -> str:
        """The words of one voice message ("" when nothing was heard); raises NotHeard."""
        started = time.perf_counter()
        try:
            voice, _ = await self.api.media_get(media_id, max_bytes=self.max_bytes, timeout=self.download_timeout,
                                                types=VOICE_TYPES)
        except (MediaRefused, MediaUnavailable) as e:
            metrics.media_step("download", "refused" if isinstance(e, MediaRefused) else "failed",
                               time.perf_counter() - started)
            log.warning("voice_download_failed", reason=str(e))
            raise NotHeard(f"download: {e}") from None
        converted_at = time.perf_counter()
        metrics.media_step("download", "ok", converted_at - started)
        try:
            audio = await to_mp3(voice, self.ffmpeg, self.convert_timeout)
        except ConverterMissing:
            metrics.media_step("convert", "missing_converter", 0.0)
            log.error("voice_converter_missing", ffmpeg=self.ffmpeg, advice="apt-get install ffmpeg")
            raise NotHeard("converter missing", missing_converter=True) from None
        except ConversionFailed as e:
            metrics.media_step("convert", "failed", time.perf_counter() - converted_at)
            log.warning("voice_conversion_failed", reason=str(e))
            raise NotHeard("conversion failed") from None
        heard_at = time.perf_counter()
        metrics.media_step("convert", "ok", heard_at - converted_at)
        try:
            text = await self.speech.transcribe(audio)
        except ProviderError as e:
            metrics.media_step("transcribe", "failed", time.perf_counter() - heard_at)
            log.warning("voice_transcription_failed", kind=e.kind, status=e.status, channel=self.speech.name)
            raise NotHeard("transcription failed") from None
        metrics.media_step("transcribe", "ok" if text else "empty", time.perf_counter() - heard_at)
        return text
