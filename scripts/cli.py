"""`mpgpt` — the command line. Every failure the user can cause ends in one line and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence

from bot.config import ConfigError
from scripts import demo, report
from scripts.composition import config_from_args as _config
from storage.postgres import StorageUnavailable


def _serve(args: argparse.Namespace) -> int:
    from scripts.composition import create_app
    from scripts.serving import ListenError, bind, run_loop, say_failure, serve
    from bot.logs import setup_logging

    cfg = _config(args)
    json_lines = setup_logging(cfg.log.level, cfg.log.format)
    loop = _event_loop(cfg.server.event_loop)
    if loop is None:
        return 2
    try:
        sock = bind(cfg.server.host, cfg.server.port)
    except ListenError as e:
        say_failure(str(e), json_lines)
        return 1
    return run_loop(loop, serve(cfg, create_app(cfg), sock, json_lines=json_lines, exiting=True))


def _event_loop(choice: str) -> asyncio.AbstractEventLoop | None:
    """The loop `serve` runs on. uvloop's C event loop and transports take about a fifth off the
    /wechat edge's CPU per message (bench/); asyncio's own loop stays a config word away."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                print("mpgpt: server.event_loop: uvloop is not installed (pip install uvloop, or set \"asyncio\")",
                      file=sys.stderr)
                return None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _migrate(args: argparse.Namespace) -> int:
    from scripts.composition import database

    cfg = _config(args)
    if args.to:
        from scripts.owner.transfer import migrate_to

        return asyncio.run(migrate_to(cfg, args.to))

    async def run() -> list[int]:
        db = database(cfg)
        await db.open(migrate=False)
        try:
            return await db.migrate()
        finally:
            await db.close()

    try:
        applied = asyncio.run(run())
    except sqlite3.Error as e:
        print(f"mpgpt: storage.path: {cfg.resolve_path(cfg.storage.path)}: {e}", file=sys.stderr)
        return 1
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "schema is up to date")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from scripts.simulate import run_simulator

    cfg = _config(args)
    return asyncio.run(run_simulator(cfg, url=args.url, openid=args.openid, media_port=args.media_port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpgpt", description="WeChat-first LLM chat service")
    parser.add_argument("--config", help="config file (default: $MPGPT_CONFIG or ./config.toml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the server (/wechat and the companion page)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.add_argument("--to", metavar="POSTGRESQL_URL",
                   help="copy the SQLite database (storage.path) into this empty PostgreSQL database")
    p.set_defaults(func=_migrate)
    p = sub.add_parser("simulate", help="chat with a running mpgpt as WeChat would (signed, encrypted, retried)")
    p.add_argument("--url", help="the server's /wechat URL (default: from [server])")
    p.add_argument("--openid", default="o_simulator", help="the follower's openid to play")
    p.add_argument("--media-port", type=int, default=0,
                   help="also play WeChat's media server here, for /voice and /picture (point wechat.api_base at it)")
    p.set_defaults(func=_simulate)
    report.register(sub)
    demo.register(sub)
    from scripts import owner  # the owner's maintenance commands (users, credits, orders, doctor, ...)

    owner.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `--config` may come after the subcommand too (`mpgpt serve --config x.toml`).
    argv = list(sys.argv[1:] if argv is None else argv)
    for name, sp in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        sp.add_argument("--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"mpgpt: config error: {e}", file=sys.stderr)
        return 2
    except StorageUnavailable as e:
        print(f"mpgpt: storage.url: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
