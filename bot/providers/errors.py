"""What a provider's error answer means for us: one ProviderError kind per failure.

Shared by every channel, so OpenAI's and ZhipuAI's ways of saying "no money" or "refused" land
on the same kinds. Exhausted balance is `auth` (the channel must be disabled until the owner acts),
not `rate_limited`, although OpenAI sends it as a 429.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

from bot.providers.base import ChatMessage, ProviderError, Usage, estimate_tokens

# Codes and phrases that mean "this key has no money or quota left".
_BALANCE_CODES = frozenset({"insufficient_quota", "billing_not_active", "insufficient_balance",
                            "1113",  # ZhipuAI: 您的账户已欠费
                            })
_BALANCE_WORDS = ("insufficient balance", "exceeded your current quota", "欠费", "余额不足")
# ZhipuAI: 1000-1004 authentication failures, 1110-1112 account locked or unavailable.
_AUTH_CODES = frozenset({"invalid_api_key", "1000", "1001", "1002", "1003", "1004", "1110", "1111", "1112"})
# Content refused by the provider's moderation: not worth another channel, the user hears why.
_REFUSED_CODES = frozenset({"content_filter", "content_policy_violation", "1301"})
_REFUSED_WORDS = ("content management policy", "content_filter", "不安全或敏感", "敏感内容")


def _error_fields(body: dict[str, Any]) -> tuple[str, str, str]:
    err = body.get("error", body)
    if not isinstance(err, dict):
        return "", "", str(err)
    return str(err.get("code") or ""), str(err.get("type") or ""), str(err.get("message") or "")


def classify_status(status: int | None, body: dict[str, Any], fallback: str) -> ProviderError:
    code, type_, message = _error_fields(body)
    message = message or fallback
    text = f"{message} {type_}".lower()
    if code in _BALANCE_CODES or type_ in _BALANCE_CODES or any(w in text for w in _BALANCE_WORDS):
        return ProviderError("auth", f"balance or quota exhausted: {message}", status)
    if code in _REFUSED_CODES or any(w in text for w in _REFUSED_WORDS):
        return ProviderError("refused", f"content refused: {message}", status)
    if status in (401, 403) or code in _AUTH_CODES:
        return ProviderError("auth", f"key rejected: {message}", status)
    if status == 402:
        return ProviderError("auth", f"payment required: {message}", status)
    if status == 429 or code in ("1302", "1303", "1305"):
        return ProviderError("rate_limited", f"rate limited: {message}", status)
    if status == 408:
        return ProviderError("timeout", f"provider timed out: {message}", status)
    if status is None or status >= 500:
        return ProviderError("server", f"provider error: {message}", status)
    return ProviderError("bad_request", f"request rejected: {message}", status)


def finish_error(finish_reason: str) -> ProviderError | None:
    """A stream that ends on moderation or a provider-side failure is not a normal answer."""
    if finish_reason in ("content_filter", "sensitive"):
        return ProviderError("refused", f"answer stopped by the provider's content filter ({finish_reason})")
    if finish_reason == "network_error":
        return ProviderError("server", "provider reported an internal error mid-stream")
    return None


def is_connect_failure(exc: BaseException) -> bool:
    """True when the cause chain shows the TCP connection itself failed (refused, unreachable, DNS)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, (ConnectionRefusedError, ConnectionAbortedError)) or type(cur).__name__ in (
                "ClientConnectorError", "ClientConnectorDNSError", "ConnectError"):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def estimate_usage(messages: Sequence[ChatMessage], answer: str) -> Usage:
    """For a provider that reported no usage: both sides estimated (ignoring the prompt under-bills)."""
    # ~4 tokens of framing per message in OpenAI's chat format.
    prompt = sum(estimate_tokens(m.content) + 4 for m in messages)
    return Usage(prompt, estimate_tokens(answer), estimated=True)
