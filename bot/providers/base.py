"""The one interface every model channel speaks, and the errors it may raise.

A channel's `stream()` yields text chunks (`str`) as the provider sends them, then exactly one
`Usage` as its last item. `max_tokens`, when given, caps the answer (sent to the provider): a
token-priced model's reservation counts on it. Errors are `ProviderError`s whose `kind` says what went wrong, so the
router can decide to fail over (connect, timeout, rate_limited, server) or not (auth, bad_request,
refused), and the chat service can pick the sentence the user sees.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
ErrorKind = Literal["connect", "timeout", "rate_limited", "server", "auth", "bad_request", "refused", "protocol"]

# Failures that say nothing about the request itself: another channel may well succeed.
RETRYABLE: frozenset[str] = frozenset({"connect", "timeout", "rate_limited", "server", "protocol"})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    # a picture sent with this message, as a data URL (vision models only)
    image: str | None = None

    def wire(self) -> dict:
        """The message as OpenAI's chat API (and ZhipuAI's, GLM-4V included) takes it."""
        if self.image is None:
            return {"role": self.role, "content": self.content}
        return {"role": self.role, "content": [{"type": "text", "text": self.content},
                                                {"type": "image_url", "image_url": {"url": self.image}}]}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # True when the provider sent no usage and these are our estimate.
    estimated: bool = False


Delta = str | Usage


class ProviderError(Exception):
    def __init__(self, kind: ErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class Channel(Protocol):
    """One provider account (a base_url and a key) serving some models."""

    name: str
    provider: str
    models: tuple[str, ...]

    def stream(self, model: str, messages: Sequence[ChatMessage], *,
               max_tokens: int | None = None) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A rough count for providers that report no usage: CJK ~1 token a character, else ~4 chars."""
    cjk = sum(1 for ch in text if "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef")
    return cjk + max(0, len(text) - cjk + 3) // 4
