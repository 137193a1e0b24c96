"""`mpgpt doctor`: is everything the service depends on in order? A pass/fail table, exit 1 on a failure.

Checks: the config loads; the database opens and its schema is the latest; the books balance (the
ledger invariant); WeChat takes our app id and secret (a stable_token fetch, never a forced
refresh); each enabled channel answers a tiny question; WeChat Pay's keys load and one signed query
comes back verified; with [speech] on, the voice converter (ffmpeg) is installed. Nothing is changed, except that the fetched access token is stored for the
servers to share.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import psycopg
from dataclasses import asdict, dataclass
from typing import Any

from bot.config import Config, ConfigError, placeholders
from scripts.composition import config_path, database
from scripts.owner.kit import Ctx, OwnerError, config_of, leaf, plural, table
from storage.db import Database
from storage.postgres import StorageUnavailable
from storage.ledger import Ledger
from storage.owner_views import OwnerViews
from storage.redact import short_user
from storage.tokens import TokenRepo


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    result: str  # pass | fail | skip
    detail: str


def register(subparsers: Any) -> None:
    p = leaf(subparsers, "doctor", "check config, database, ledger, WeChat, channels and WeChat Pay", doctor,
             needs="nothing")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds each outside check may take (default 20)")


async def doctor(ctx: Ctx) -> int:
    checks: list[Check] = []
    path = os.path.abspath(config_path(ctx.args))  # which file was read is the first thing to know
    try:
        cfg = config_of(ctx.args)
        checks.append(Check("config", "pass", f"loaded {path}"))
    except ConfigError as e:
        checks.append(Check("config", "fail", f"{path}: {e}"))
        return _report(ctx, checks)
    checks.append(_placeholders(cfg))
    try:
        db = await _database(cfg, checks)
    except OwnerError as e:
        checks.append(Check("database", "fail", str(e)))
        db = None
    if db is not None:
        try:
            await _ledger(db, checks)
            outside = await asyncio.gather(_wechat(cfg, db, ctx.args.timeout), _pay(cfg, db, ctx.args.timeout),
                                           *(_channel(cfg, ch.name, ctx.args.timeout) for ch in cfg.channels))
            checks += outside
        finally:
            await db.close()
    if cfg.speech.channel:
        checks.append(_converter(cfg))
    return _report(ctx, checks)


def _placeholders(cfg: Config) -> Check:
    found = placeholders(cfg)
    if found:
        return Check("placeholders", "fail", f"{', '.join(found)}: still the example value shipped in config.toml")
    return Check("placeholders", "pass", "no example values left from config.toml")


def _converter(cfg: Config) -> Check:
    import shutil

    from bot.media.convert import converter_problem

    problem = converter_problem(cfg.speech.ffmpeg)
    if problem is not None:
        return Check("speech", "fail", problem)
    return Check("speech", "pass", f"voice converter {shutil.which(cfg.speech.ffmpeg)}")


def _report(ctx: Ctx, checks: list[Check]) -> int:
    ctx.emit([asdict(c) for c in checks],
             lambda: table([(c.name, c.result.upper() if c.result == "fail" else c.result, c.detail) for c in checks],
                           ("CHECK", "RESULT", "DETAIL")))
    return 1 if any(c.result == "fail" for c in checks) else 0


async def _database(cfg: Config, checks: list[Check]) -> Database | None:
    path = cfg.resolve_path(cfg.storage.path)
    if not cfg.storage.url and not path.exists():
        raise OwnerError(f"no database at {str(path)!r} (start the server or run `mpgpt migrate`)")
    try:
        db = await database(cfg).open(migrate=False)
    except StorageUnavailable as e:
        raise OwnerError(f"storage.url: {e}") from None
    checks.append(Check("database", "pass", f"{db.engine} {db.where()}"))
    try:
        have, want = await db.schema_version(), db.latest_version()
    except BaseException:
        await db.close()  # an open connection's thread would keep doctor from exiting
        raise
    if have == want:
        checks.append(Check("schema", "pass", f"version {have} (latest)"))
    elif have < want:
        checks.append(Check("schema", "fail", f"version {have}, this mpgpt needs {want}: run `mpgpt migrate`"))
    else:
        checks.append(Check("schema", "fail", f"version {have} is newer than this mpgpt knows ({want})"))
    return db


async def _ledger(db: Database, checks: list[Check]) -> None:
    try:
        found = await Ledger(db).check_invariant()
    except (sqlite3.Error, psycopg.Error) as e:
        checks.append(Check("ledger", "fail", f"cannot check: {e}"))
        return
    if not found:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM accounts")
        checks.append(Check("ledger", "pass", f"{plural(row['n'] if row else 0, 'account')} match their ledger rows"))
        return
    first = ", ".join(f"{short_user(m.openid)} {m.subject} stored {m.stored} ledger {m.ledger}" for m in found[:3])
    checks.append(Check("ledger", "fail", f"{plural(len(found), 'mismatch', 'mismatches')}: {first}"))


async def _wechat(cfg: Config, db: Database, timeout: float) -> Check:
    import aiohttp

    from bot.wechat.api import WeChatAPI, WeChatAPIError

    w = cfg.wechat
    if not (w.app_id and w.app_secret):
        return Check("wechat", "skip", "no app_id/app_secret (passive mode needs no API calls)")
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(timeout):
                left = await WeChatAPI(w, session, TokenRepo(db)).check_credentials()
    except WeChatAPIError as e:
        hint = " (this machine's IP is not on the account's IP whitelist)" if e.errcode == 40164 else ""
        return Check("wechat", "fail", f"stable_token: {e.errcode} {e.errmsg}{hint}")
    except TimeoutError:
        return Check("wechat", "fail", f"stable_token: no answer within {timeout:g} s")
    return Check("wechat", "pass", f"app {w.app_id}: access token valid for {int(left)} s")


async def _channel(cfg: Config, name: str, timeout: float) -> Check:
    from scripts.owner.channels import probe

    ch = next(c for c in cfg.channels if c.name == name)
    if not ch.enabled:
        return Check(f"channel {name}", "skip", "off in the config")
    r = await probe(cfg, name, timeout=timeout)
    if r.ok:
        return Check(f"channel {name}", "pass",
                     f"{r.model}: first token {r.first_token_ms} ms, {r.total_ms} ms in all")
    return Check(f"channel {name}", "fail", f"{r.model}: {r.error}")


async def _pay(cfg: Config, db: Database, timeout: float) -> Check:
    from bot.pay.client import PayClient, PayError

    if not cfg.pay.enabled:
        return Check("pay", "skip", "off (no [pay] table)")
    try:
        client = PayClient.from_config(cfg)
    except (OSError, ValueError) as e:
        return Check("pay", "fail", f"keys do not load: {e}")
    # WeChat Pay signs every answer but the library verifies only successful ones: query our newest
    # order when there is one (a verified answer proves both keys), else a number nobody has (a
    # 'no such order' proves WeChat Pay took our signature).
    newest = await OwnerViews(db).orders(limit=1)
    no = newest[0]["out_trade_no"] if newest else f"DOCTOR{int(time.time())}"
    try:
        async with asyncio.timeout(timeout):
            async with client:
                if not client.ready:
                    return Check("pay", "fail", "the client could not start (platform certificates?)")
                found = await client.query(no)
    except PayError as e:
        return Check("pay", "fail", f"query {no}: {e}")
    except TimeoutError:
        return Check("pay", "fail", f"query: no answer within {timeout:g} s")
    mode = "public key" if cfg.pay.public_key_id else "certificates"
    if newest and found is None:
        return Check("pay", "fail", f"WeChat Pay does not know our newest order {no} (another merchant's keys?)")
    proof = (f"order {no} queried, the signed answer verified" if newest
             else "a signed query was accepted (no order yet whose answer could be verified)")
    return Check("pay", "pass", f"merchant {cfg.pay.mchid} ({mode}): keys load, {proof}")
