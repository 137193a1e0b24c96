"""[pay]: WeChat Pay API v3 (direct merchant). A [pay] table switches top-ups on."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import ValidationInfo, model_validator

from bot.config.base import HttpUrl, Positive, Section, base_dir, resolve
from bot.config.errors import problem


def pem_problem(p: Path, kind: Literal["private", "public"]) -> str | None:
    """None when `p` holds a PEM key of that kind, else what is wrong with the file."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return f"file not found: {str(p)!r}"
    except OSError as e:
        return f"cannot read {str(p)!r}: {e.strerror}"
    try:
        load_pem_private_key(data, password=None) if kind == "private" else load_pem_public_key(data)
    except (ValueError, TypeError):
        return f"{str(p)!r} is not a PEM {kind} key"
    return None


class PayConfig(Section):
    """WeChat Pay API v3 (direct merchant). A [pay] table switches top-ups on."""

    enabled: bool = True
    mchid: str = ""
    app_id: str = ""
    api_base: HttpUrl = "https://api.mch.weixin.qq.com"
    private_key_path: str = ""
    cert_serial_no: str = ""
    apiv3_key: str = ""
    # Public-key mode (new merchants): WeChat Pay's public key and its id PUB_KEY_ID_...
    public_key_path: str = ""
    public_key_id: str = ""
    # Certificate mode: platform certificates are kept here (fetched from /v3/certificates if empty).
    cert_dir: str = ""
    notify_url: str = ""
    order_expiry: Positive = 1800.0
    # Pending orders older than this are queried, in case their notify was lost.
    query_after: Positive = 60.0
    job_interval: Positive = 60.0
    # The official SDKs refuse notifies whose timestamp is further off than this.
    notify_tolerance: Positive = 300.0
    api_timeout: Positive = 10.0

    @model_validator(mode="after")
    def _merchant(self, info: ValidationInfo) -> PayConfig:
        # A table switched off is not checked: an owner may keep half-filled settings for later.
        if not self.enabled:
            return self
        for name in ("mchid", "app_id", "cert_serial_no", "private_key_path", "notify_url"):
            if not getattr(self, name):
                raise problem(name, "is required")
        if len(self.apiv3_key.encode()) != 32:
            raise problem("apiv3_key", "must be the 32-character APIv3 key (or set MPGPT_PAY_APIV3_KEY)")
        folder = base_dir(info)
        if err := pem_problem(resolve(folder, self.private_key_path), "private"):
            raise problem("private_key_path", err)
        if bool(self.public_key_path) != bool(self.public_key_id):
            missing = "public_key_id" if self.public_key_path else "public_key_path"
            raise problem(missing, "is required with the other (public-key mode needs both)")
        if self.public_key_path:
            if not self.public_key_id.startswith("PUB_KEY_ID_"):
                raise problem("public_key_id", "must start with PUB_KEY_ID_")
            if err := pem_problem(resolve(folder, self.public_key_path), "public"):
                raise problem("public_key_path", err)
        url = urllib.parse.urlsplit(self.notify_url)
        loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise problem("notify_url", "must be an https:// URL (WeChat Pay calls only HTTPS)")
        if url.query or not url.hostname:
            raise problem("notify_url", "must be a full URL without a query string")
        return self
