"""`mpgpt codes create|list|show|disable`: redemption codes sold or given outside WeChat Pay.

`create` writes the codes to a new CSV file (owner-only, never overwritten) before it stores their
hashes: the database never holds a code, so the file is the only copy. If storing fails, the file
is removed again; a code is either in the file and redeemable, or nowhere.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import re
from pathlib import Path
from typing import Any

from bot.economics.codes import expiry, hash_of, new_code, parse_duration
from scripts.owner.kit import Ctx, OwnerError, group, leaf, pairs, plural, positive_int, table
from storage.codes import Batch, Code, CodeRepo

_BATCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_COUNT = 100_000


def batch_name(text: str) -> str:
    if not _BATCH.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a batch name is 1-64 letters, digits, _ . or -")
    return text


def duration(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"at most {MAX_COUNT} codes at once (got {value})")
    return value


def register(subparsers: Any) -> None:
    codes = group(subparsers, "codes", "redemption codes (兑换 CODE in WeChat or on the page)")
    p = leaf(codes, "create", "make a batch of codes and write them to a new CSV file", codes_create)
    p.add_argument("--credits", required=True, type=positive_int, help="credits each code gives")
    p.add_argument("--count", required=True, type=count, help=f"how many codes (1-{MAX_COUNT})")
    p.add_argument("--expires", type=duration, help="valid for this long from now: 30d, 12h, 90m (default: never)")
    p.add_argument("--batch", type=batch_name, help="a name for the batch (default: batch-<date-time>)")
    p.add_argument("--out", required=True, help="the CSV file to write (must not exist)")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    leaf(codes, "list", "every batch: credits, how many codes are redeemed, disabled, expired", codes_list)
    p = leaf(codes, "show", "one code's state (give the code) or one batch's (give its name)", codes_show)
    p.add_argument("what", metavar="CODE|BATCH")
    p = leaf(codes, "disable", "stop a code, or every unredeemed code of a batch, from being redeemed", codes_disable)
    p.add_argument("code", metavar="CODE", nargs="?", help="the code")
    p.add_argument("--batch", type=batch_name, help="every unredeemed code of this batch")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")


def _batch_row(b: Batch) -> dict[str, Any]:
    return {"batch": b.batch, "credits": b.credits, "total": b.total, "redeemed": b.redeemed, "disabled": b.disabled,
            "expired": b.expired, "open": b.total - b.redeemed - b.disabled - b.expired, "created_at": b.created_at,
            "expires_at": b.expires_at}


def _code_row(c: Code, now: float) -> dict[str, Any]:
    return {"id": c.id, "batch": c.batch, "credits": c.credits, "state": c.state(now), "created_at": c.created_at,
            "expires_at": c.expires_at, "disabled_at": c.disabled_at, "redeemed_by": c.redeemed_by,
            "redeemed_at": c.redeemed_at}


def _csv_text(codes: list[str], batch: str, credits: int, expires_at: float | None, tz: Any) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("code", "batch", "credits", "expires"))
    until = "" if expires_at is None else dt.datetime.fromtimestamp(expires_at, tz).isoformat(timespec="minutes")
    for code in codes:
        w.writerow((code, batch, credits, until))
    return out.getvalue()


async def codes_create(ctx: Ctx) -> None:
    from zoneinfo import ZoneInfo

    a = ctx.args
    tz = ZoneInfo(ctx.cfg.quota.timezone)
    repo = CodeRepo(ctx.db)
    batch = a.batch or "batch-" + dt.datetime.now(tz).strftime("%Y%m%d-%H%M%S")
    if any(b.batch == batch for b in await repo.batches()):
        raise OwnerError(f"batch {batch!r} exists already: choose another --batch")
    expires_at = expiry(a.expires)
    codes = [new_code() for _ in range(a.count)]
    out = Path(a.out)
    try:
        # O_EXCL: never overwrite a file (an earlier batch's codes); 0600: the codes are money.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OwnerError(f"{a.out} exists already: give a new --out file") from None
    except OSError as e:
        raise OwnerError(f"cannot create {a.out}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(_csv_text(codes, batch, a.credits, expires_at, tz))
            f.flush()
            os.fsync(f.fileno())
        hashes = [hash_of(c) for c in codes]
        assert all(hashes)
        async with ctx.change("codes.create", batch, a.reason) as ch:
            ids = await CodeRepo(ch.db).add_batch(batch, a.credits, hashes, expires_at)  # type: ignore[arg-type]
            ch.detail.update(count=len(ids), credits=a.credits, expires_at=expires_at, first_id=ids[0],
                             last_id=ids[-1])
    except BaseException:
        out.unlink(missing_ok=True)  # not stored: these codes must not circulate
        raise
    ctx.emit({"batch": batch, "count": len(codes), "credits": a.credits, "expires_at": expires_at,
              "out": str(out), "audit_id": ch.id},
             f"made {plural(len(codes), 'code')} of {plural(a.credits, 'credit')} in batch {batch}"
             + (f", valid until {ctx.when(expires_at)}" if expires_at else "") + f": written to {out}")


async def codes_list(ctx: Ctx) -> None:
    items = await CodeRepo(ctx.db).batches()
    rows = [_batch_row(b) for b in items]
    ctx.emit(rows, lambda: table(
        [(r["batch"], r["credits"], r["total"], r["redeemed"], r["open"], r["disabled"], r["expired"],
          ctx.when(r["created_at"]), ctx.when(r["expires_at"])) for r in rows],
        ("BATCH", "CREDITS", "CODES", "REDEEMED", "OPEN", "DISABLED", "EXPIRED", "MADE", "EXPIRES")))


async def codes_show(ctx: Ctx) -> None:
    import time

    repo, now, what = CodeRepo(ctx.db), time.time(), ctx.args.what
    code_hash = hash_of(what)
    if code_hash is not None:
        code = await repo.by_hash(code_hash)
        if code is None:
            raise OwnerError("no such code (codes are matched ignoring case, spaces and dashes)")
        row = _code_row(code, now)
        ctx.emit(row, lambda: pairs([("code id", code.id), ("batch", code.batch), ("credits", code.credits),
                                     ("state", row["state"]), ("made", ctx.when(code.created_at)),
                                     ("expires", ctx.when(code.expires_at)), ("disabled", ctx.when(code.disabled_at)),
                                     ("redeemed by", code.redeemed_by), ("redeemed", ctx.when(code.redeemed_at))]))
        return
    found = [b for b in await repo.batches() if b.batch == what]
    if not found:
        raise OwnerError(f"{what!r} is neither a code nor a batch (see `mpgpt codes list`)")
    redeemed = [c for c in await repo.in_batch(what, MAX_COUNT) if c.redeemed_by is not None]
    data = {**_batch_row(found[0]), "redemptions": [_code_row(c, now) for c in redeemed]}
    ctx.emit(data, lambda: pairs([(k, ctx.when(v) if k.endswith("_at") else v)
                                  for k, v in _batch_row(found[0]).items()]) + "\n\n" + table(
        [(c.id, c.redeemed_by, ctx.when(c.redeemed_at)) for c in redeemed], ("CODE ID", "REDEEMED BY", "AT")))


async def codes_disable(ctx: Ctx) -> None:
    a = ctx.args
    if (a.code is None) == (a.batch is None):
        raise OwnerError("give one code, or --batch NAME")
    if a.code is not None:
        code_hash = hash_of(a.code)
        if code_hash is None or await CodeRepo(ctx.db).by_hash(code_hash) is None:
            raise OwnerError("no such code (codes are matched ignoring case, spaces and dashes)")
        target, where = code_hash[:12], {"code_hash": code_hash}
    else:
        if not any(b.batch == a.batch for b in await CodeRepo(ctx.db).batches()):
            raise OwnerError(f"no batch {a.batch!r} (see `mpgpt codes list`)")
        target, where = a.batch, {"batch": a.batch}
    async with ctx.change("codes.disable", target, a.reason) as ch:
        n = await CodeRepo(ch.db).disable(**where)
        ch.detail["disabled"] = n
    ctx.emit({"disabled": n, "audit_id": ch.id},
             f"disabled {n} code{'s' if n != 1 else ''}" + ("" if n else " (already redeemed or disabled)"))
