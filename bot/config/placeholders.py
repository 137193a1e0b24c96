"""The example values config.toml ships with (`token = "change-me"`, `api_key = "sk-change-me"`, ...).

They pass validation on purpose (the shipped file must load), so nothing else would say that the
service runs on them: `mpgpt serve` warns at start and `mpgpt doctor` fails, each naming the key.
"""

from __future__ import annotations

from bot.config.root import Config

# Marks of an example value: config.toml's own, and the elisions its commented [pay] example uses.
_MARKS = ("change-me", "changeme", "...", "…")
_EXACT = {"id.secret", "1900000000", "your-token", "xxx"}
# config.toml's own example host (only that one: a subdomain may be a test's stand-in)
_EXAMPLE_HOSTS = ("example.com", "www.example.com")


def _is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return bool(v) and (v in _EXACT or any(mark in v for mark in _MARKS))


def _is_example_url(value: str) -> bool:
    host = value.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    return host in _EXAMPLE_HOSTS


def placeholders(cfg: Config) -> list[str]:
    """Dotted keys that still hold an example value (never the values: some sit beside secrets)."""
    found = []
    w = cfg.wechat
    for key in ("token", "app_id", "app_secret", "encoding_aes_key"):
        if _is_placeholder(getattr(w, key)):
            found.append(f"wechat.{key}")
    for i, ch in enumerate(cfg.channels):
        if _is_placeholder(ch.api_key):
            found.append(f"channels[{i}].api_key ({ch.name})")
    for key, value in (("chat.key_secret", cfg.chat.key_secret),
                       ("companion.session_secret", cfg.companion.session_secret),
                       ("metrics.token", cfg.metrics.token)):
        if _is_placeholder(value):
            found.append(key)
    if _is_example_url(cfg.server.public_url):
        found.append("server.public_url")
    if cfg.pay.enabled:
        p = cfg.pay
        for key in ("mchid", "app_id", "cert_serial_no", "apiv3_key", "public_key_id"):
            if _is_placeholder(getattr(p, key)):
                found.append(f"pay.{key}")
        if _is_example_url(p.notify_url):
            found.append("pay.notify_url")
    return found
