"""The speech channel: voice to text through an OpenAI-compatible /audio/transcriptions endpoint.

OpenAI (whisper-1, gpt-4o-mini-transcribe), a local whisper server and ZhipuAI's ASR (glm-asr, at
/api/paas/v4/audio/transcriptions) all take the same multipart request — `file` and `model` — and
answer `{"text": ...}`, so one client serves them: the `openai` SDK (it builds the multipart body
and maps error statuses), with its retries off and our own timeout.
"""

from __future__ import annotations

import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from bot.config import ChannelConfig, SpeechConfig
from bot.providers.base import ProviderError
from bot.providers.errors import classify_status

# ZhipuAI's SDK default; the openai SDK's own default (api.openai.com/v1) serves the rest.
ZHIPUAI_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"


class SpeechChannel:
    def __init__(self, channel: ChannelConfig, speech: SpeechConfig) -> None:
        self.name = channel.name
        self.model = speech.model
        self.language = speech.language
        base_url = channel.base_url or (ZHIPUAI_BASE_URL if channel.provider == "zhipuai" else None)
        timeout = openai.Timeout(speech.timeout, connect=channel.connect_timeout)
        self._client = AsyncOpenAI(base_url=base_url, api_key=channel.api_key, max_retries=0, timeout=timeout,
                                   http_client=DefaultAioHttpClient(timeout=timeout))

    async def transcribe(self, audio: bytes, filename: str = "voice.mp3", mime: str = "audio/mpeg") -> str:
        """The words in `audio` ("" when the model heard nothing). Failures are ProviderErrors."""
        extra = {"language": self.language} if self.language else {}
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.model, file=(filename, audio, mime), response_format="json", **extra)
        except openai.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            raise classify_status(e.status_code, body, f"{self.name}: transcription failed") from None
        except openai.APITimeoutError:
            raise ProviderError("timeout", f"{self.name}: transcription timed out") from None
        except openai.APIError as e:  # connection failures, unreadable answers
            raise ProviderError("connect", f"{self.name}: {type(e).__name__}") from None
        text = getattr(result, "text", "")
        return text.strip() if isinstance(text, str) else ""

    async def aclose(self) -> None:
        await self._client.close()
