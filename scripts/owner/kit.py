"""What every owner command shares: parsers with one-line errors, the database the server uses,
the audit trail, tables or JSON, and turning every failure into one line and a non-zero exit.

A command is `async def run(ctx: Ctx) -> int | None`, wrapped by `command(run)` for argparse.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import re
import sqlite3
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import psycopg
import structlog

from bot.config import Config, ConfigError
from scripts.composition import config_from_args, database
from storage.audit import Audit
from storage.db import Database
from storage.postgres import StorageUnavailable
from storage.owner_views import OwnerViews


class OwnerError(Exception):
    """A failure the owner can act on; printed as one line."""


# -- parsers ------------------------------------------------------------------------------------------

def _one_line_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    # the command's own usage, folded into the same line: what it takes is right beside what was wrong
    usage = " ".join(parser.format_usage().split()).removeprefix("usage: ")
    for action in parser._actions:  # a group's usage names its subcommands, not just COMMAND
        if isinstance(action, argparse._SubParsersAction) and action.choices:
            usage = usage.replace("COMMAND ...", "{" + "|".join(action.choices) + "} ...")
    print(f"{parser.prog}: error: {message} (usage: {usage}; --help explains)", file=sys.stderr)
    raise SystemExit(2)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Bad arguments end in one line (argparse prints the usage too, by default)."""
    parser.error = lambda message: _one_line_error(parser, message)  # type: ignore[method-assign]
    return parser


def group(subparsers: Any, name: str, help: str) -> Any:
    """A command with subcommands (`mpgpt credits grant|deduct`)."""
    p = one_line_errors(subparsers.add_parser(name, help=help, description=help))
    sub = p.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
    return sub


def leaf(subparsers: Any, name: str, help: str, run: Callable[[Ctx], Awaitable[int | None]], *,
         needs: str = "db") -> argparse.ArgumentParser:
    """One command: --json, --config (also after the subcommand) and one-line errors. `needs`: "db"
    (config and the database), "config", or "nothing" (the command loads what it wants)."""
    # "resolve": the command line adds --config to top-level commands too (scripts/cli.py main()).
    p = one_line_errors(subparsers.add_parser(name, help=help, description=help, conflict_handler="resolve"))
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    p.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(func=command(run, needs=needs))
    return p


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0 (got {value})")
    return value


def reason_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a reason cannot be empty")
    return text.strip()


# -- running ------------------------------------------------------------------------------------------

_SECRET = re.compile(r"secret|key|token|password", re.IGNORECASE)


def safe_argv(argv: Sequence[str]) -> list[str]:
    """The command line for the audit trail, with the values of secret-looking options hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
        elif arg.startswith("--") and _SECRET.search(arg.split("=", 1)[0]):
            if "=" in arg:
                out.append(arg.split("=", 1)[0] + "=***")
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(arg)
    return out


@dataclass
class Ctx:
    args: argparse.Namespace
    argv: list[str]
    # Set as the command's `needs` asks (see leaf()); a command never reads what it did not ask for.
    cfg: Config = None  # type: ignore[assignment]
    db: Database = None  # type: ignore[assignment]
    audit: Audit = None  # type: ignore[assignment]
    views: OwnerViews = None  # type: ignore[assignment]

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def change(self, action: str, target: str = "", reason: str = "") -> Any:
        return self.audit.change(action, target, reason=reason, args=self.argv)

    async def user(self, text: str) -> str:
        """The openid the owner means: exact, or the unique one ending in `text`."""
        found = await self.views.resolve_user(text)
        if not found:
            raise OwnerError(f"unknown user {text!r}")
        if len(found) > 1:
            raise OwnerError(f"{text!r} matches several users ({', '.join(found[:3])}, ...): give more of the openid")
        return found[0]

    # output
    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        if self.json:
            print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        else:
            print(text() if callable(text) else text)

    def when(self, t: float | None) -> str:
        return when(t, self.cfg.quota.timezone)


def config_of(args: argparse.Namespace) -> Config:
    return config_from_args(args)


def quiet_logs() -> None:
    """Commands print their own results; the libraries' logs only when something is wrong."""
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


async def open_db(cfg: Config) -> Database:
    """The server's database, as the server opens it, once the schema is what this code expects."""
    path = cfg.resolve_path(cfg.storage.path)
    if not cfg.storage.url and not path.exists():
        raise OwnerError(f"no database at {str(path)!r} (start the server or run `mpgpt migrate` first)")
    try:
        db = await database(cfg).open(migrate=False)
    except StorageUnavailable as e:
        raise OwnerError(f"storage.url: {e}") from None
    try:
        have, want = await db.schema_version(), db.latest_version()
    except BaseException:
        await db.close()  # an open connection's thread would keep the command from exiting
        raise
    if have != want:
        await db.close()
        if have < want:
            raise OwnerError(f"the database schema is at version {have}, this mpgpt needs {want}: run `mpgpt migrate`")
        raise OwnerError(f"the database schema is at version {have}, newer than this mpgpt knows ({want}): upgrade")
    return db


def command(run: Callable[[Ctx], Awaitable[int | None]], *, needs: str = "db") -> Callable[[argparse.Namespace], int]:
    def main(args: argparse.Namespace) -> int:
        quiet_logs()
        try:
            return asyncio.run(_run(run, args, needs))
        except OwnerError as e:
            print(f"mpgpt: {e}", file=sys.stderr)
            return 1
        except ConfigError:
            raise  # the command line prints it in one line (exit 2)
        except (sqlite3.Error, psycopg.Error) as e:
            print(f"mpgpt: database error: {' '.join(str(e).split())}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            raise
        except Exception as e:  # never a traceback for the owner; MPGPT_DEBUG=1 shows it
            if os.environ.get("MPGPT_DEBUG"):
                raise
            print(f"mpgpt: unexpected {type(e).__name__}: {e} (MPGPT_DEBUG=1 shows where)", file=sys.stderr)
            return 1
    return main


async def _run(run: Callable[[Ctx], Awaitable[int | None]], args: argparse.Namespace, needs: str) -> int:
    ctx = Ctx(args, safe_argv(sys.argv[1:]))
    if needs == "nothing":
        return int(await run(ctx) or 0)
    ctx.cfg = config_of(args)
    if needs == "config":
        return int(await run(ctx) or 0)
    ctx.db = await open_db(ctx.cfg)
    try:
        ctx.audit, ctx.views = Audit(ctx.db), OwnerViews(ctx.db)
        return int(await run(ctx) or 0)
    finally:
        await ctx.db.close()


# -- formatting ---------------------------------------------------------------------------------------

def when(t: float | None, tz: str = "Asia/Shanghai") -> str:
    """A time as the owner reads it, in [quota] timezone, saying which: `2026-01-31 14:05 +08:00`."""
    if t is None:
        return "-"
    local = dt.datetime.fromtimestamp(t, ZoneInfo(tz))
    offset = local.strftime("%z")
    return local.strftime("%Y-%m-%d %H:%M ") + f"{offset[:3]}:{offset[3:]}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 day`, `2 days` (`words` for an irregular plural: plural(n, "entry", "entries"))."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def yuan(fen: int | None) -> str:
    return "-" if fen is None else f"¥{fen // 100}.{fen % 100:02d}"


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell (CJK characters count two)."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if len(cells) == 1:
        lines.append("(none)")
    return "\n".join(lines)


def pairs(items: Sequence[tuple[str, Any]]) -> str:
    """`key: value` lines, keys aligned."""
    w = max((_width(k) for k, _ in items), default=0)
    return "\n".join(f"{k}{' ' * (w - _width(k))}  {'-' if v is None else v}" for k, v in items)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_since(text: str, now: float, tz: str) -> float:
    """'7d', '12h', '30m' before now, or a date / date-time in the config's time zone."""
    m = _DURATION.fullmatch(text.strip())
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise OwnerError(f"{text!r} is neither a duration (7d, 12h, 30m) nor a date (2026-01-31)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(tz))
    return parsed.timestamp()


def read_json_file(path: str) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OwnerError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OwnerError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError as e:
        raise OwnerError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
