"""[speech]: voice messages WeChat did not transcribe are downloaded, converted and transcribed."""

from __future__ import annotations

from pydantic import Field, model_validator

from bot.config.base import Positive, PositiveInt, Section
from bot.config.errors import problem


class SpeechConfig(Section):
    # A [[channels]] entry whose endpoint serves /audio/transcriptions ("" = voice needs WeChat's Recognition).
    channel: str = ""
    model: str = "whisper-1"
    # Credits per transcribed voice message, on top of the answer.
    cost: int = Field(0, ge=0)
    # false: transcribe every voice message with this channel, even when WeChat sent a Recognition.
    use_recognition: bool = True
    # A hint for the speech model ("zh", ...); "" lets it detect the language.
    language: str = ""
    # Seconds the transcription request may take.
    timeout: Positive = 10.0
    # The converter (AMR/Speex to MP3): Debian's ffmpeg, by name on PATH or a path; and its time limit.
    ffmpeg: str = "ffmpeg"
    convert_timeout: Positive = 5.0
    # Voice files larger than this are refused (WeChat's are at most 60 s, ~100 KB as AMR).
    max_bytes: PositiveInt = 2_000_000

    @model_validator(mode="after")
    def _named(self) -> SpeechConfig:
        if self.channel and not self.model.strip():
            raise problem("model", "must name the speech model")
        if self.channel and not self.ffmpeg.strip():
            raise problem("ffmpeg", "must name the converter (ffmpeg)")
        return self
