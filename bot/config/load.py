"""Reading config.toml: the file, then the environment's secrets, then one validation."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from bot.config.channels import PROVIDER_KEY_ENV
from bot.config.base import Section
from bot.config.errors import ConfigError, from_validation
from bot.config.root import Config

# Scalar keys that may come from the environment instead of the file (secrets first of all).
ENV_KEYS = {
    "MPGPT_WECHAT_TOKEN": ("wechat", "token"),
    "MPGPT_WECHAT_APP_ID": ("wechat", "app_id"),
    "MPGPT_WECHAT_APP_SECRET": ("wechat", "app_secret"),
    "MPGPT_WECHAT_ENCODING_AES_KEY": ("wechat", "encoding_aes_key"),
    "MPGPT_SERVER_HOST": ("server", "host"),
    "MPGPT_SERVER_PORT": ("server", "port"),
    "MPGPT_STORAGE_PATH": ("storage", "path"),
    "MPGPT_STORAGE_URL": ("storage", "url"),
    "MPGPT_CHAT_KEY_SECRET": ("chat", "key_secret"),
    "MPGPT_PAY_MCHID": ("pay", "mchid"),
    "MPGPT_PAY_APIV3_KEY": ("pay", "apiv3_key"),
    "MPGPT_PAY_PRIVATE_KEY_PATH": ("pay", "private_key_path"),
    "MPGPT_PAY_CERT_SERIAL_NO": ("pay", "cert_serial_no"),
    "MPGPT_PAY_PUBLIC_KEY_PATH": ("pay", "public_key_path"),
    "MPGPT_PAY_PUBLIC_KEY_ID": ("pay", "public_key_id"),
    "MPGPT_METRICS_TOKEN": ("metrics", "token"),
    "MPGPT_COMPANION_SESSION_SECRET": ("companion", "session_secret"),
}
# Sections validated even when the file leaves them out, so that their own checks (wechat.token is
# required) run: every table of Config but [pay] (without the table, pay stays off and unchecked).
_ALWAYS = tuple(name for name, f in Config.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, Section) and name != "pay")


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, check and freeze the configuration; raise ConfigError on the first problem."""
    env = os.environ if env is None else env
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read config file {str(p)!r}: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError("", f"{p}: not valid TOML: {e}") from None
    return config_from_dict(data, env=env, base_dir=str(p.resolve().parent))


def config_from_dict(data: dict[str, Any], env: Mapping[str, str] | None = None, base_dir: str = ".") -> Config:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if "base_dir" in data:
        raise ConfigError("base_dir", "unknown key")
    if isinstance(data.get("channels"), list):
        data["channels"] = [dict(c) if isinstance(c, dict) else c for c in data["channels"]]
    _apply_env(data, {} if env is None else env)
    for section in _ALWAYS:
        data.setdefault(section, {})
    try:
        return Config.model_validate({**data, "base_dir": base_dir}, context={"base_dir": base_dir})
    except ValidationError as e:
        raise from_validation(e) from None


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in ENV_KEYS.items():
        if var in env:
            if section == "pay" and not isinstance(data.get("pay"), dict):
                continue  # pay secrets in the environment do not switch pay on; a [pay] table does
            value: Any = env[var]
            if key == "port":
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(f"{section}.{key}", f"{var} must be an integer (got {value!r})") from None
            if isinstance(data.setdefault(section, {}), dict):
                data[section][key] = value
    for i, ch in enumerate(data.get("channels", []) or []):
        if not isinstance(ch, dict) or ch.get("api_key"):
            continue
        name = str(ch.get("name", i)).upper().replace("-", "_")
        own = env.get(f"MPGPT_CHANNEL_{name}_API_KEY")
        shared = env.get(PROVIDER_KEY_ENV.get(str(ch.get("provider")), ""), "")
        if own or shared:
            ch["api_key"] = own or shared
