"""The composition root: the one place that builds the whole server (server.py), and the config and
storage every command opens (here).

Dependencies point one way: scripts -> composition -> web_companion -> bot -> storage. Only this
package knows every other one, so it sits in scripts/, above both the page and the bot (as
cosmicpython's bootstrap.py sits beside its entrypoints): the bot's 登录 command is handed the page's
Logins here, and neither package imports the other's wiring.

`create_app` is imported on first use: commands that only open storage (migrate, the owner's
commands) do not pay for importing the server's SDKs.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from bot.config import Config, load_config
from storage.db import Database
from storage.postgres import PostgresDatabase

if TYPE_CHECKING:
    from scripts.composition.server import create_app

__all__ = ["config_from_args", "create_app", "database"]


def config_path(args: argparse.Namespace) -> str:
    """The config file a command reads: --config, else $MPGPT_CONFIG, else ./config.toml."""
    return getattr(args, "config", None) or os.environ.get("MPGPT_CONFIG") or "config.toml"


def config_from_args(args: argparse.Namespace) -> Config:
    """The config a command runs with: --config, else $MPGPT_CONFIG, else ./config.toml."""
    return load_config(config_path(args))


def database(cfg: Config) -> Database | PostgresDatabase:
    """The one storage the server and every command open (not opened yet: the caller chooses
    whether opening migrates): PostgreSQL when [storage] url names one, else the SQLite file."""
    if cfg.storage.url:
        return PostgresDatabase(cfg.storage.url, pool_size=cfg.storage.pool_size,
                                connect_timeout=cfg.storage.busy_timeout_ms / 1000,
                                in_flight_max=cfg.storage.statements_in_flight, room_wait=cfg.storage.busy_wait)
    return Database(cfg.resolve_path(cfg.storage.path), cfg.storage.busy_timeout_ms)


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from scripts.composition.server import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
