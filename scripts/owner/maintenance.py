"""`mpgpt backup --out FILE` and `mpgpt prune`.

backup copies the live database while the server runs (SQLite's online backup, one consistent
snapshot), then checks the copy before calling it good: SQLite's integrity and foreign-key checks,
and the credits ledger's own invariant on the copy. prune deletes message content older than
`storage.retention_days` in short batches, and page analytics older than `analytics.retention_days`;
money and usage records stay.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from scripts.owner.kit import Ctx, OwnerError, leaf, pairs, plural, positive_int
from storage.backup import backup, check_copy
from storage.analytics import prune_page_events
from storage.db import Database
from storage.ledger import Ledger
from storage.pgbackup import DumpFailed, dump
from storage.retention import count_prunable, prune


def register(subparsers: Any) -> None:
    p = leaf(subparsers, "backup", "copy the live database to FILE, then check the copy", backup_cmd)
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the copy")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p = leaf(subparsers, "prune", "delete messages and answers older than the retention", prune_cmd)
    p.add_argument("--days", type=positive_int, help="keep this many days (default: storage.retention_days)")
    p.add_argument("--dry-run", action="store_true", help="only count what would go")


class ProgressBar:
    """`backup [#######.......]  52%  1234/2345 pages` on a terminal; a line per tenth elsewhere."""

    def __init__(self, out: TextIO = sys.stderr, width: int = 30, label: str = "backup", unit: str = "pages") -> None:
        self.out = out
        self.label, self.unit = label, unit
        self.width = width
        self.tty = out.isatty()
        self._last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        tenth = int(share * 10)
        if not self.tty and tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        filled = int(self.width * share)
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%}  {done}/{total} {self.unit}"
        self.out.write(("\r" + line) if self.tty else (line + "\n"))
        self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


async def backup_cmd(ctx: Ctx) -> int:
    out = Path(ctx.args.out).expanduser()
    live = ctx.cfg.resolve_path(ctx.cfg.storage.path).resolve()
    if out.resolve() == live:
        raise OwnerError("--out names the live database itself")
    if out.exists() and not ctx.args.force:
        raise OwnerError(f"{out} exists (use --force to replace it)")
    if not out.parent.is_dir():
        raise OwnerError(f"no such folder: {out.parent}")
    if ctx.db.engine == "postgresql":
        return await _pg_backup(ctx, out)
    bar = ProgressBar()
    started = time.perf_counter()
    try:
        pages = await backup(ctx.db, out, None if ctx.json else bar)
    except OSError as e:
        raise OwnerError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        bar.finish()
    seconds = time.perf_counter() - started
    check = check_copy(out)
    mismatches: int | None = None
    version: int | None = None
    if check.integrity == "ok":
        copy = await Database(out).open(migrate=False)
        try:
            mismatches = len(await Ledger(copy).check_invariant())
            version = await copy.schema_version()
        finally:
            await copy.close()
    ok = check.ok and mismatches == 0
    data = {"file": str(out), "bytes": out.stat().st_size, "pages": pages, "seconds": round(seconds, 3),
            "integrity": check.integrity, "foreign_key_violations": check.foreign_keys,
            "ledger_mismatches": mismatches, "ok": ok}
    ctx.emit(data, pairs([
        ("backup", str(out)), ("size", f"{plural(data['bytes'], 'byte')}, {plural(pages, 'page')} in {seconds:.2f} s"),
        ("integrity", check.integrity), ("foreign keys", "ok" if not check.foreign_keys else
                                          plural(check.foreign_keys, "violation")),
        ("ledger", "balances match the ledger" if mismatches == 0 else plural(mismatches or 0, "mismatch", "mismatches")),
        ("schema", version),
        ("result", "ok" if ok else "FAILED: do not rely on this copy")]))
    return 0 if ok else 1


async def _pg_backup(ctx: Ctx, out: Path) -> int:
    """PostgreSQL: pg_dump of one exported snapshot, the ledger checked in that snapshot."""
    bar = ProgressBar(unit="tables")
    started = time.perf_counter()
    try:
        check = await dump(ctx.db, out, None if ctx.json else bar)
    except (DumpFailed, OSError) as e:
        raise OwnerError(f"backup failed: {e}") from None
    finally:
        bar.finish()
    seconds = time.perf_counter() - started
    ok = check.ledger_mismatches == 0 and check.archive_entries > 0
    data = {"file": str(out), "bytes": out.stat().st_size, "format": "pg_dump custom", "tables": check.tables,
            "seconds": round(seconds, 3), "archive_entries": check.archive_entries,
            "ledger_mismatches": check.ledger_mismatches, "ok": ok}
    ctx.emit(data, pairs([
        ("backup", str(out)), ("size", f"{data['bytes']:,} bytes, {check.tables} tables in {seconds:.2f} s"),
        ("archive", f"{check.archive_entries} entries (pg_restore --list); restore with pg_restore -d URL FILE"),
        ("ledger", "balances match the ledger" if check.ledger_mismatches == 0
         else f"{check.ledger_mismatches} mismatches"),
        ("result", "ok" if ok else "FAILED: do not rely on this copy")]))
    return 0 if ok else 1


async def prune_cmd(ctx: Ctx) -> None:
    days = ctx.args.days or ctx.cfg.storage.retention_days
    analytics_days = ctx.cfg.analytics.retention_days
    cutoff = time.time() - days * 86400
    if ctx.args.dry_run:
        counts = _asdict(await count_prunable(ctx.db, cutoff))
        verb = "would delete"
    else:
        counts = _asdict(await prune(ctx.db, cutoff))
        # Page analytics keep their own retention ([analytics] retention_days).
        counts["page_events"] = await prune_page_events(ctx.db, analytics_days)
        await ctx.audit.record("prune", "storage", args=ctx.argv,
                               detail={"days": days, "analytics_days": analytics_days, "cutoff": cutoff, **counts})
        verb = "deleted"
    data = {"days": days, "analytics_days": analytics_days, "dry_run": bool(ctx.args.dry_run), **counts}
    what = [plural(n, _NOUNS.get(k, k)) for k, n in counts.items() if k != "page_events"]
    if "page_events" in counts:
        what.append(f"{plural(counts['page_events'], 'page event')} (older than {plural(analytics_days, 'day')})")
    text = f"older than {plural(days, 'day')}, {verb}: " + ", ".join(what)
    ctx.emit(data, text)


# what prune counts, as one of each is called
_NOUNS = {"inbound": "message", "pictures": "picture", "answers": "answer", "turns": "turn",
          "conversations": "conversation"}


def _asdict(counts: Any) -> dict[str, int]:
    return {k: getattr(counts, k) for k in counts.__slots__}
