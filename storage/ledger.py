"""The credits ledger: accounts' two buckets, the append-only ledger and generation reservations.

The scheme (see migration 0003): `balance` holds credits that keep (trial, top-ups, owner
adjustments), `daily` holds today's free credits; a charge takes from `daily` first. Every ledger row
carries the two deltas it applied, so for every account

    balance == SUM(ledger.amount)  and  daily == SUM(ledger.daily_amount)

and every method below that writes a row moves the account by the same deltas in the same
transaction. `check_invariant()` proves it for a whole database (`mpgpt doctor`).

Token-priced answers (migration 0022) are charged to the milli-credit: each bucket's sub-credit part
is a column of its own (`balance_milli`, `daily_milli`, 0..999), moved by the ledger's `amount_milli`
and `daily_milli` the same way, so `balance_milli == SUM(ledger.amount_milli)` and `daily_milli ==
SUM(ledger.daily_milli)` hold too. Only a token-priced settle (giving back what was reserved but not
spent) and an expiry write milli-credits; reservations take whole credits, so nothing else changes.

Exactly-once: each state change is one BEGIN IMMEDIATE transaction guarded in SQL (a conditional
UPDATE, a state transition `WHERE state = 'reserved'`, UNIQUE (openid, kind, ref) on the ledger), so a
WeChat retry, a second process or a restart repeats nothing. On PostgreSQL the hot ones (reserve,
settle, refund, a new day) are each one statement, or one call of a function holding the same steps
(migration 0025), with the account row locked before it is read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
import structlog

from storage.answers import CREATE_ARGS_PG, Draft, NewQuestion, create_now, create_params, new_question
from storage.db import Database
from storage.dialect import for_update, is_postgres
from storage.rate_events import RateCount, count_now
from storage.redact import short_user
from storage.steps import Step, together

log = structlog.get_logger(__name__)

# The kinds `apply_entry` may write; the others belong to grant_daily and the reservation methods.
# redeem: a redemption code (storage.codes); invite: an invitation reward.
ENTRY_KINDS = ("trial", "topup", "admin", "redeem", "invite")


class _DayMoved(Exception):
    """raise_daily found the account on another day: its ledger row is rolled back."""


class InsufficientCredits(Exception):
    """An owner debit larger than the balance: the ledger never goes below zero."""


@dataclass(frozen=True, slots=True)
class Account:
    openid: str
    status: str
    tier: str
    balance: int
    daily: int
    # The Asia/Shanghai day `daily` was granted for (YYYY-MM-DD), None before the first grant.
    daily_day: str | None
    created_at: float
    # the sub-credit parts of the buckets, in milli-credits (0..999; token-priced answers leave them)
    balance_milli: int = 0
    daily_milli: int = 0

    @property
    def frozen(self) -> bool:
        return self.status == "frozen"

    @property
    def spendable(self) -> int:
        """Whole credits a reservation may take (the milli-credit parts wait to make up a credit)."""
        return self.balance + self.daily

    @property
    def balance_exact(self) -> int:
        """The lasting balance in milli-credits."""
        return self.balance * 1000 + self.balance_milli

    @property
    def daily_exact(self) -> int:
        """Today's free credits in milli-credits."""
        return self.daily * 1000 + self.daily_milli


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    kind: str
    amount: int
    daily_amount: int
    ref: str
    created_at: float
    amount_milli: int = 0
    daily_milli: int = 0

    @property
    def total_milli(self) -> int:
        """What the row moved, both buckets, in milli-credits."""
        return (self.amount + self.daily_amount) * 1000 + self.amount_milli + self.daily_milli


@dataclass(frozen=True, slots=True)
class Reservation:
    gen_key: str
    openid: str
    amount: int
    from_daily: int
    state: str
    created_at: float
    finished_at: float | None
    # token pricing: what was charged (milli-credits), and whether the usage was our estimate
    spent_milli: int | None = None
    estimated: bool = False

    @property
    def charged_milli(self) -> int:
        """What the answer cost in milli-credits: 0 unless settled."""
        if self.state != "settled":
            return 0
        return self.amount * 1000 if self.spent_milli is None else self.spent_milli


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One broken invariant: `subject` is 'balance', 'daily', 'balance_milli', 'daily_milli' or
    'reservation <gen_key>' (whose rows are compared in milli-credits)."""

    openid: str
    subject: str
    stored: Any
    ledger: Any


ACCOUNT_COLS = "openid, status, tier, balance, daily, daily_day, created_at, balance_milli, daily_milli"


def account_from_row(row: Any) -> Account:
    """An Account from a row holding ACCOUNT_COLS (by name)."""
    return Account(row["openid"], row["status"], row["tier"], row["balance"], row["daily"], row["daily_day"],
                   row["created_at"], row["balance_milli"], row["daily_milli"])


def _check_entry(kind: str, amount: int) -> None:
    if kind not in ENTRY_KINDS:
        msg = f"apply_entry writes {', '.join(ENTRY_KINDS)} entries, not {kind!r}"
        raise ValueError(msg)
    if (kind in ("topup", "redeem", "invite") and amount <= 0) or (kind == "admin" and amount == 0) or (kind == "trial" and amount < 0):
        msg = f"a {kind} entry cannot have amount {amount}"
        raise ValueError(msg)


def apply_entry_now(conn: sqlite3.Connection, openid: str, kind: str, amount: int, ref: str, now: float) -> bool:
    """Add one trial/topup/admin/redeem/invite row and move the balance, inside an open transaction on `conn`.

    False when (openid, kind, ref) is in the ledger already: nothing changes. The account is created if
    it does not exist (a payment is never dropped). A debit below zero raises InsufficientCredits, which
    rolls the caller's transaction back.
    """
    _check_entry(kind, amount)
    conn.execute("INSERT INTO accounts (openid, created_at) VALUES (?, ?) ON CONFLICT (openid) DO NOTHING",
                 (openid, now))
    inserted = conn.execute(
        "INSERT INTO ledger (openid, kind, amount, ref, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (openid, kind, ref) DO NOTHING RETURNING id",
        (openid, kind, amount, ref, now),
    ).fetchall()
    if not inserted:
        return False
    if amount:
        moved = conn.execute(
            "UPDATE accounts SET balance = balance + ? WHERE openid = ? AND balance + ? >= 0 RETURNING balance",
            (amount, openid, amount),
        ).fetchall()
        if not moved:
            msg = f"{kind} of {amount} would take the balance below zero"
            raise InsufficientCredits(msg)
    return True


async def apply_entry(conn: aiosqlite.Connection, openid: str, kind: str, amount: int, ref: str,
                      *, now: float | None = None) -> bool:
    """apply_entry_now INSIDE the caller's `db.transaction()` (the pay notify credits a top-up in the
    same transaction that marks the order paid): run on the connection's own thread, same transaction."""
    now = time.time() if now is None else now
    return await conn._execute(apply_entry_now, conn._conn, openid, kind, amount, ref, now)


def settle_entry(conn: sqlite3.Connection, gen_key: str, now: float, spent_milli: int | None = None,
                 estimated: bool = False) -> int | None:
    """Settle `gen_key`'s reservation inside an open transaction; the amount reserved, or None if there
    is none or it was settled or refunded already.

    `spent_milli` None spends the whole reservation (a fixed cost). Otherwise (token pricing) the
    answer spends that much, never more than was reserved, and the settle row gives the rest back
    to the buckets it came from (daily pays first, as it did in the reserve)."""
    if spent_milli is None:
        rows = conn.execute(
            "UPDATE reservations SET state = 'settled', finished_at = ? WHERE gen_key = ? AND state = 'reserved'"
            " RETURNING openid, amount", (now, gen_key)).fetchall()
        if not rows:
            return None
        conn.execute("INSERT INTO ledger (openid, kind, ref, created_at) VALUES (?, 'settle', ?, ?)",
                     (rows[0]["openid"], gen_key, now))
        return int(rows[0]["amount"])
    rows = conn.execute(
        "UPDATE reservations SET state = 'settled', finished_at = ?,"
        " spent_milli = CASE WHEN amount * 1000 < ? THEN amount * 1000 ELSE ? END, estimated = ?"
        " WHERE gen_key = ? AND state = 'reserved' RETURNING openid, amount, from_daily, spent_milli",
        (now, spent_milli, spent_milli, int(estimated), gen_key)).fetchall()
    if not rows:
        return None
    openid, amount, from_daily, spent = rows[0]["openid"], rows[0]["amount"], rows[0]["from_daily"], rows[0]["spent_milli"]
    from_daily_spent = min(from_daily * 1000, spent)
    back_daily = from_daily * 1000 - from_daily_spent
    back_balance = (amount - from_daily) * 1000 - (spent - from_daily_spent)
    # the carry into whole credits happens in the UPDATE itself (no earlier read to go stale);
    # the row's deltas follow from the new values, since the old milli part was within 0..999
    new = conn.execute(
        "UPDATE accounts SET balance = balance + (balance_milli + ?) / 1000, balance_milli = (balance_milli + ?) % 1000,"
        " daily = daily + (daily_milli + ?) / 1000, daily_milli = (daily_milli + ?) % 1000"
        " WHERE openid = ? RETURNING balance_milli, daily_milli",
        (back_balance, back_balance, back_daily, back_daily, openid)).fetchone()
    b_milli = new["balance_milli"] - (new["balance_milli"] - back_balance) % 1000
    d_milli = new["daily_milli"] - (new["daily_milli"] - back_daily) % 1000
    conn.execute(
        "INSERT INTO ledger (openid, kind, amount, daily_amount, amount_milli, daily_milli, ref, created_at)"
        " VALUES (?, 'settle', ?, ?, ?, ?, ?, ?)",
        (openid, (back_balance - b_milli) // 1000, (back_daily - d_milli) // 1000, b_milli, d_milli, gen_key, now))
    return int(amount)


def refund_entry(conn: sqlite3.Connection, gen_key: str, now: float) -> int | None:
    """Refund `gen_key`'s reservation inside an open transaction, to the buckets it came from; the
    amount, or None if there is none or it was settled or refunded already."""
    rows = conn.execute(
        "UPDATE reservations SET state = 'refunded', finished_at = ? WHERE gen_key = ? AND state = 'reserved'"
        " RETURNING openid, amount, from_daily", (now, gen_key)).fetchall()
    if not rows:
        return None
    openid, from_daily = rows[0]["openid"], rows[0]["from_daily"]
    from_balance = rows[0]["amount"] - from_daily
    conn.execute("UPDATE accounts SET balance = balance + ?, daily = daily + ? WHERE openid = ?",
                 (from_balance, from_daily, openid))
    conn.execute(
        "INSERT INTO ledger (openid, kind, amount, daily_amount, ref, created_at) VALUES (?, 'refund', ?, ?, ?, ?)",
        (openid, from_balance, from_daily, gen_key, now))
    return int(rows[0]["amount"])


def _reserve_now(conn: sqlite3.Connection, openid: str, gen_key: str, amount: int, now: float) -> tuple[bool, str | None]:
    """Ledger.reserve inside one BEGIN IMMEDIATE transaction (SQLite): (charged, whose reservation
    the key already was). One conditional UPDATE decides what is taken."""
    held = conn.execute("SELECT openid FROM reservations WHERE gen_key = ?", (gen_key,)).fetchone()
    if held is not None:
        return False, held["openid"]
    row = conn.execute("SELECT daily FROM accounts WHERE openid = ?", (openid,)).fetchone()
    if row is None:
        return False, None
    taken = conn.execute(
        "UPDATE accounts SET daily = daily - (CASE WHEN daily < :a THEN daily ELSE :a END),"
        " balance = balance - (:a - (CASE WHEN daily < :a THEN daily ELSE :a END))"
        " WHERE openid = :o AND status = 'active' AND balance + daily >= :a RETURNING daily",
        {"a": amount, "o": openid}).fetchall()
    if not taken:
        return False, None
    from_daily = row["daily"] - taken[0]["daily"]
    conn.execute("INSERT INTO reservations (gen_key, openid, amount, from_daily, created_at) VALUES (?, ?, ?, ?, ?)",
                 (gen_key, openid, amount, from_daily, now))
    conn.execute("INSERT INTO ledger (openid, kind, amount, daily_amount, ref, created_at)"
                 " VALUES (?, 'reserve', ?, ?, ?, ?)", (openid, from_daily - amount, -from_daily, gen_key, now))
    return True, None


@dataclass(frozen=True, slots=True)
class CountedReserve:
    """What Ledger.admit_and_reserve did."""

    # None: the rate limit refused (nothing reserved); else whether the credits are held for the
    # question (by this call, or an earlier one with the same key)
    reserved: bool | None
    # the question's answer, when one was asked for and the credits are held
    started: NewQuestion | None


def _reservable(amount: int) -> None:
    if amount < 0:
        msg = f"cannot reserve a negative amount ({amount})"
        raise ValueError(msg)


# Told (op, credits) after a committed reserve, settle or refund: how the caller counts credits moved
# (the server passes bot.metrics.credits_moved; storage knows no caller).
OnMoved = Callable[[str, int], None]


# PostgreSQL: each of these state changes is one statement sent without BEGIN/COMMIT (db.write_one),
# one round trip instead of four to seven:
# - reserve: the steps of Ledger.reserve's SQLite path in a function (migration 0025), since it reads
#   the account it locked;
# - settle / refund: one statement (data-modifying WITH) whose state transition `WHERE state =
#   'reserved'` returns the row exactly once; the account is updated by the statement itself, so
#   PostgreSQL applies the refund to its newest version.
_RESERVE_PG = ("SELECT charged, holder FROM mpgpt_reserve(:o, :k, CAST(:a AS BIGINT), CAST(:now AS DOUBLE PRECISION))")
_ADMIT_ARGS_PG = ("?, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION), ?,"
                  " CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION)")
_ADMIT_AND_RESERVE_PG = f"SELECT admitted, charged, holder FROM mpgpt_admit_and_reserve({_ADMIT_ARGS_PG})"
_ADMIT_RESERVE_CREATE_PG = f"SELECT * FROM mpgpt_admit_reserve_create({_ADMIT_ARGS_PG}, {CREATE_ARGS_PG})"
_SETTLE_PG = (
    "WITH r AS (UPDATE reservations SET state = 'settled', finished_at = :now"
    " WHERE gen_key = :k AND state = 'reserved' RETURNING openid, amount),"
    " entry AS (INSERT INTO ledger (openid, kind, ref, created_at) SELECT openid, 'settle', :k, :now FROM r)"
    " SELECT amount FROM r")
_REFUND_PG = (
    "WITH r AS (UPDATE reservations SET state = 'refunded', finished_at = :now"
    " WHERE gen_key = :k AND state = 'reserved' RETURNING openid, amount, from_daily),"
    " moved AS (UPDATE accounts SET balance = balance + (r.amount - r.from_daily), daily = daily + r.from_daily"
    " FROM r WHERE accounts.openid = r.openid),"
    " entry AS (INSERT INTO ledger (openid, kind, amount, daily_amount, ref, created_at)"
    " SELECT openid, 'refund', amount - from_daily, from_daily, :k, :now FROM r)"
    " SELECT amount FROM r")


def _unobserved(op: str, amount: int) -> None:
    pass


def _amount(rows: list[Any]) -> int | None:
    return int(rows[0]["amount"]) if rows else None


class Ledger:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time, *,
                 on_moved: OnMoved = _unobserved) -> None:
        self.db = db
        self.clock = clock
        self.on_moved = on_moved

    # -- accounts -------------------------------------------------------------------------------

    async def account(self, openid: str) -> Account | None:
        row = await self.db.lookup(f"SELECT {ACCOUNT_COLS} FROM accounts WHERE openid = ?", (openid,))
        return account_from_row(row) if row else None

    async def ensure_account(self, openid: str, trial_credits: int) -> Account:
        """The account, created on first contact with its trial grant (written once, even as 0)."""
        row = await self.db.lookup(
            f"SELECT {ACCOUNT_COLS}, EXISTS (SELECT 1 FROM ledger l WHERE l.openid = a.openid"
            " AND l.kind = 'trial') AS has_trial FROM accounts a WHERE openid = ?", (openid,))
        if row is not None and row["has_trial"]:
            return account_from_row(row)
        now = self.clock()
        if self.db.engine == "postgresql":  # the same steps in one call (migration 0026)
            made = (await self.db.write_one(
                "SELECT account, opened FROM mpgpt_open_account(?, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION))",
                (openid, max(0, trial_credits), now)))[0]
            opened, account = made["opened"], account_from_row(made["account"])
        else:
            opened, account = await self.db.write(
                lambda conn: self._open_account(conn, openid, max(0, trial_credits), now))
        if opened:
            log.info("credits.account_opened", user=short_user(openid), trial=max(0, trial_credits))
        return account

    @staticmethod
    def _open_account(conn: sqlite3.Connection, openid: str, trial: int, now: float) -> tuple[bool, Account]:
        opened = apply_entry_now(conn, openid, "trial", trial, "trial", now)
        account = conn.execute(f"SELECT {ACCOUNT_COLS} FROM accounts WHERE openid = ?", (openid,)).fetchone()
        return opened, account_from_row(account)

    async def balance(self, openid: str) -> int:
        """Credits the user can spend now (balance + today's free credits); 0 without an account."""
        account = await self.account(openid)
        return account.spendable if account else 0

    async def balance_milli(self, openid: str) -> int:
        """The same, exactly: milli-credits, with the fractions token-priced answers leave."""
        account = await self.account(openid)
        return account.balance_exact + account.daily_exact if account else 0

    async def grant_daily(self, openid: str, amount: int, day: str) -> bool:
        """Open `day` for the account: expire what is left of the last daily grant, grant `amount`.

        Idempotent per day (True only for the call that opened it); a day earlier than the last one
        granted is ignored. Requires the account (ensure_account first)."""
        row = await self.db.lookup("SELECT daily_day FROM accounts WHERE openid = ?", (openid,))
        if row is None or (row["daily_day"] is not None and row["daily_day"] >= day):
            return False
        now = self.clock()
        if self.db.engine == "postgresql":  # the same steps in one call (migration 0025)
            rows = await self.db.write_one(
                "SELECT mpgpt_open_day(?, CAST(? AS BIGINT), ?, CAST(? AS DOUBLE PRECISION)) AS opened",
                (openid, amount, day, now))
            return bool(rows[0]["opened"])

        def run(conn: sqlite3.Connection) -> bool:
            current = conn.execute("SELECT daily, daily_milli, daily_day FROM accounts WHERE openid = ?",
                                   (openid,)).fetchone()
            if current is None or (current["daily_day"] is not None and current["daily_day"] >= day):
                return False
            left, left_milli = current["daily"], current["daily_milli"]
            if left > 0 or left_milli > 0:
                conn.execute("INSERT INTO ledger (openid, kind, daily_amount, daily_milli, ref, created_at)"
                             " VALUES (?, 'expire', ?, ?, ?, ?)", (openid, -left, -left_milli, day, now))
            if amount > 0:
                conn.execute("INSERT INTO ledger (openid, kind, daily_amount, ref, created_at)"
                             " VALUES (?, 'daily', ?, ?, ?)", (openid, amount, day, now))
            conn.execute("UPDATE accounts SET daily = ?, daily_milli = 0, daily_day = ? WHERE openid = ?",
                         (max(0, amount), day, openid))
            return True

        return await self.db.write(run)

    async def raise_daily(self, openid: str, day: str, amount: int, tier: str) -> bool:
        """Today is open already, but a tier with a larger allowance arrived (a plan bought today):
        grant the difference to `amount`, once per tier and day (ledger ref 'DAY:TIER'). True if
        this call granted it."""
        ref = f"{day}:{tier}"
        if await self.db.lookup("SELECT 1 FROM ledger WHERE openid = ? AND kind = 'daily' AND ref = ?",
                                (openid, ref)) is not None:
            return False
        now = self.clock()

        def run(conn: sqlite3.Connection) -> bool:
            if is_postgres(conn):  # two tiers' raises on two hosts: one sum at a time
                conn.execute("SELECT 1 FROM accounts WHERE openid = ?" + for_update(conn), (openid,))
            granted = conn.execute(
                "SELECT COALESCE(SUM(daily_amount), 0) AS g FROM ledger WHERE openid = ? AND kind = 'daily'"
                " AND (ref = ? OR ref LIKE ?)", (openid, day, day + ":%")).fetchone()["g"]
            more = amount - int(granted)
            if more <= 0:
                return False
            if not conn.execute(
                    "INSERT INTO ledger (openid, kind, daily_amount, ref, created_at) VALUES (?, 'daily', ?, ?, ?)"
                    " ON CONFLICT (openid, kind, ref) DO NOTHING RETURNING id", (openid, more, ref, now)).fetchall():
                return False
            if not conn.execute("UPDATE accounts SET daily = daily + ? WHERE openid = ? AND daily_day = ?"
                                " RETURNING openid", (more, openid, day)).fetchall():
                raise _DayMoved  # another day opened meanwhile: undo the row (this change only)
            return True

        try:
            return await self.db.write(run)
        except _DayMoved:
            return False

    # -- reservations ---------------------------------------------------------------------------

    async def reserve(self, openid: str, gen_key: str, amount: int) -> bool:
        """Take `amount` credits for generation `gen_key` (daily first), or refuse: False.

        One conditional UPDATE decides, so concurrent reserves can never overdraw. Idempotent per
        gen_key: once a reservation exists for it, later calls return True and charge nothing (also
        after it was settled or refunded: the generation was charged once)."""
        _reservable(amount)
        now = self.clock()

        if self.db.engine == "postgresql":  # the same steps as below in one call (migration 0025)
            row = (await self.db.write_one(_RESERVE_PG, {"o": openid, "k": gen_key, "a": amount, "now": now}))[0]
            charged, holder = bool(row["charged"]), row["holder"]
        else:
            charged, holder = await self.db.write(lambda conn: _reserve_now(conn, openid, gen_key, amount, now))
        return self._reserved(openid, gen_key, amount, charged, holder)

    async def admit_and_reserve(self, openid: str, gen_key: str, amount: int, count: RateCount,
                                then: Draft | None = None) -> CountedReserve:
        """The rate limit's count (storage.rate_events) and, if the question is counted, `reserve`,
        as one transaction. A question refused for credits stays counted, as when the two ran one
        after the other; together they are one round trip and one commit on PostgreSQL.

        `then`: the question's answer, inserted (storage.answers) in the same transaction when the
        credits are held for it; an insert that fails takes the count and the reservation back too."""
        _reservable(amount)
        now = self.clock()
        started = None
        if self.db.engine == "postgresql":  # the steps in one call (migration 0027; with `then`, 0028)
            admit = (openid, count.limit, count.since, count.now, gen_key, amount, now)
            if then is None:
                row = (await self.db.write_one(_ADMIT_AND_RESERVE_PG, admit))[0]
            else:
                row = (await self.db.write_one(_ADMIT_RESERVE_CREATE_PG, admit + create_params(then)))[0]
                started = new_question(row) if row["answer"] is not None else None
            admitted, charged, holder = bool(row["admitted"]), bool(row["charged"]), row["holder"]
        else:
            def run(conn: sqlite3.Connection) -> tuple[bool, bool, str | None, NewQuestion | None]:
                if not count_now(conn, openid, count):
                    return False, False, None, None
                charged, holder = _reserve_now(conn, openid, gen_key, amount, now)
                held = charged or holder == openid
                return True, charged, holder, create_now(conn, then) if then is not None and held else None

            admitted, charged, holder, started = await self.db.write(run)
        if not admitted:
            return CountedReserve(None, None)
        return CountedReserve(self._reserved(openid, gen_key, amount, charged, holder), started)

    def _reserved(self, openid: str, gen_key: str, amount: int, charged: bool, holder: str | None) -> bool:
        """What a committed reserve means: held for `openid` (by this call or an earlier one)."""
        reserved = charged or holder == openid
        foreign = not charged and holder is not None and holder != openid
        if foreign:
            log.error("credits.gen_key_of_another_user", gen_key=gen_key, user=short_user(openid))
        if charged:
            self.on_moved("reserved", amount)  # after the commit
        return reserved

    async def settle(self, gen_key: str, spent_milli: int | None = None, *, estimated: bool = False) -> bool:
        """The generation delivered: its reserved credits are spent (all of them, or `spent_milli`
        milli-credits of them for a token-priced answer, the rest given back in the same row). True
        exactly once."""
        (amount,) = await together(self.settle_step(gen_key, spent_milli, estimated=estimated))
        return amount is not None

    def settle_step(self, gen_key: str, spent_milli: int | None = None, *, estimated: bool = False
                    ) -> Step[int | None]:
        """`settle` as a part of a larger state change (storage/steps.py): the amount reserved, or
        None if it was settled or refunded already."""
        if spent_milli is not None and spent_milli < 0:
            msg = f"cannot spend a negative amount ({spent_milli})"
            raise ValueError(msg)
        now = self.clock()

        def settled(amount: int | None) -> None:
            if amount is not None:
                self.on_moved("settled", amount if spent_milli is None else min(spent_milli, amount * 1000) // 1000)

        return Step(self.db, lambda conn: settle_entry(conn, gen_key, now, spent_milli, estimated),
                    (_SETTLE_PG, {"k": gen_key, "now": now}) if spent_milli is None else None,
                    _amount, settled)

    async def refund(self, gen_key: str) -> bool:
        """The generation failed before the user saw any of it: give the credits back to the buckets
        they came from. True exactly once (never after settle)."""
        (amount,) = await together(self.refund_step(gen_key))
        return amount is not None

    def refund_step(self, gen_key: str) -> Step[int | None]:
        """`refund` as a part of a larger state change: the amount, or None if already settled or refunded."""
        now = self.clock()

        def refunded(amount: int | None) -> None:
            if amount is not None:
                self.on_moved("refunded", amount)

        return Step(self.db, lambda conn: refund_entry(conn, gen_key, now),
                    (_REFUND_PG, {"k": gen_key, "now": now}), _amount, refunded)

    async def reservation(self, gen_key: str) -> Reservation | None:
        row = await self.db.lookup("SELECT * FROM reservations WHERE gen_key = ?", (gen_key,))
        if row is None:
            return None
        return Reservation(row["gen_key"], row["openid"], row["amount"], row["from_daily"], row["state"],
                           row["created_at"], row["finished_at"], row["spent_milli"], bool(row["estimated"]))

    async def sweep_stale(self, older_than: float) -> int:
        """Refund reservations still open `older_than` seconds after they were made (the process that
        made them died). Each refund is the guarded one above: safe beside a live settle or another
        process's sweeper. Returns how many this call refunded."""
        cutoff = self.clock() - older_than
        rows = await self.db.fetchall(
            "SELECT gen_key, openid FROM reservations WHERE state = 'reserved' AND created_at < ?"
            " ORDER BY created_at LIMIT 1000", (cutoff,))
        refunded = 0
        for row in rows:
            if await self.refund(row["gen_key"]):
                refunded += 1
                log.warning("credits.stale_reservation_refunded", gen_key=row["gen_key"], user=short_user(row["openid"]))
        return refunded

    # -- reading and checking -------------------------------------------------------------------

    async def history(self, openid: str, limit: int = 20, offset: int = 0) -> list[Entry]:
        """The account's ledger rows, newest first."""
        rows = await self.db.fetchall(
            "SELECT id, kind, amount, daily_amount, ref, created_at, amount_milli, daily_milli FROM ledger"
            " WHERE openid = ? ORDER BY id DESC LIMIT ? OFFSET ?", (openid, limit, offset))
        return [Entry(*tuple(r)) for r in rows]

    async def apply(self, openid: str, kind: str, amount: int, ref: str) -> bool:
        """apply_entry in a transaction of its own (owner adjustments from the command line)."""
        async with self.db.transaction() as conn:
            return await apply_entry(conn, openid, kind, amount, ref, now=self.clock())

    async def check_invariant(self) -> list[Mismatch]:
        """Every account whose buckets differ from its ledger sums, and every reservation whose ledger
        rows do not match its state. Empty means the books balance."""
        sums = (("balance", "balance", "s_amount"), ("daily", "daily", "s_daily"),
                ("balance_milli", "balance_milli", "s_amount_milli"), ("daily_milli", "daily_milli", "s_daily_milli"))
        found = [
            Mismatch(r["openid"], subject, r[stored], r[summed])
            for r in await self.db.fetchall(
                "SELECT a.openid, a.balance, a.daily, a.balance_milli, a.daily_milli,"
                " COALESCE(SUM(l.amount), 0) AS s_amount, COALESCE(SUM(l.daily_amount), 0) AS s_daily,"
                " COALESCE(SUM(l.amount_milli), 0) AS s_amount_milli, COALESCE(SUM(l.daily_milli), 0) AS s_daily_milli"
                " FROM accounts a LEFT JOIN ledger l ON l.openid = a.openid GROUP BY a.openid, a.balance, a.daily,"
                " a.balance_milli, a.daily_milli HAVING a.balance != COALESCE(SUM(l.amount), 0)"
                " OR a.daily != COALESCE(SUM(l.daily_amount), 0) OR a.balance_milli != COALESCE(SUM(l.amount_milli), 0)"
                " OR a.daily_milli != COALESCE(SUM(l.daily_milli), 0)")
            for subject, stored, summed in sums
            if r[stored] != r[summed]
        ]
        for r in await self.db.fetchall(_RESERVATION_ROWS):
            # in milli-credits: a settle gives back what a token-priced answer did not spend (0 otherwise)
            unspent = 0 if r["spent_milli"] is None else r["amount"] * 1000 - r["spent_milli"]
            expected = {"reserve": -r["amount"] * 1000, "settle": unspent if r["state"] == "settled" else None,
                        "refund": r["amount"] * 1000 if r["state"] == "refunded" else None}
            actual = {"reserve": r["reserved"], "settle": r["settled"], "refund": r["refunded"]}
            if expected != actual:
                found.append(Mismatch(r["openid"], f"reservation {r['gen_key']}", expected, actual))
        for r in await self.db.fetchall(
                "SELECT openid, ref FROM ledger l WHERE kind IN ('reserve', 'settle', 'refund')"
                " AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.gen_key = l.ref AND r.openid = l.openid)"):
            found.append(Mismatch(r["openid"], f"reservation {r['ref']}", None, "ledger rows without a reservation"))
        return found


# Per reservation, the total each of its ledger rows moved in milli-credits (NULL when the row is absent).
_RESERVATION_ROWS = """
SELECT r.gen_key, r.openid, r.amount, r.state, r.spent_milli,
    (SELECT (amount + daily_amount) * 1000 + amount_milli + daily_milli FROM ledger
        WHERE openid = r.openid AND kind = 'reserve' AND ref = r.gen_key) AS reserved,
    (SELECT (amount + daily_amount) * 1000 + amount_milli + daily_milli FROM ledger
        WHERE openid = r.openid AND kind = 'settle' AND ref = r.gen_key) AS settled,
    (SELECT (amount + daily_amount) * 1000 + amount_milli + daily_milli FROM ledger
        WHERE openid = r.openid AND kind = 'refund' AND ref = r.gen_key) AS refunded
FROM reservations r
"""
