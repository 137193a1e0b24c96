"""PostgreSQL connections that read and write like SQLite's, so the repositories' SQL is shared.

A write function gets `PgConn`: `execute(sql, params)` returns a cursor with fetchone/fetchall/
rowcount, rows are read by name or index (like sqlite3.Row), and `?` / `:name` placeholders are
translated once per statement. SUM over BIGINT is NUMERIC in PostgreSQL: whole numbers come back as
int, as SQLite gives them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.types.numeric import NumericBinaryLoader, NumericLoader
from psycopg.types.string import StrDumper

_NAME = re.compile(r"[A-Za-z_]\w*")
_DIGITS = re.compile(r"\d+")


class Row:
    """A result row read by column name or position, like sqlite3.Row (dict(row) works too)."""

    __slots__ = ("_keys", "_values")

    def __init__(self, keys: dict[str, int], values: Sequence[Any]) -> None:
        self._keys = keys
        self._values = values

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._keys[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._keys)

    def __iter__(self):  # noqa: ANN204 - like sqlite3.Row: the values
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Row) and tuple(self._values) == tuple(other._values)

    def __hash__(self) -> int:
        return hash(tuple(self._values))

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._keys, self._values))!r})"


def row_factory(cursor: psycopg.Cursor) -> Callable[[Sequence[Any]], Row]:
    keys = {d.name: i for i, d in enumerate(cursor.description or ())}
    return functools.partial(Row, keys)


def _whole(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


class _BoolAsInt(Dumper):
    """Python bools are stored as 0/1 in integer columns, as SQLite stores them."""

    oid = postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class _TextWithoutNul(StrDumper):
    """PostgreSQL text cannot hold NUL (SQLite's can): a NUL from a follower or a model is dropped,
    as XML drops it from every reply anyway, instead of failing the whole write."""

    def dump(self, obj: str) -> bytes:
        return super().dump(obj.replace("\x00", "") if "\x00" in obj else obj)


class _IntNumeric(NumericLoader):
    def load(self, data: Any) -> int | float:
        return _whole(super().load(data))


class _IntNumericBinary(NumericBinaryLoader):
    def load(self, data: Any) -> int | float:
        return _whole(super().load(data))


def _adapt(conn: psycopg.Connection | psycopg.AsyncConnection) -> None:
    conn.row_factory = row_factory
    conn.adapters.register_loader("numeric", _IntNumeric)
    conn.adapters.register_loader("numeric", _IntNumericBinary)
    conn.adapters.register_dumper(bool, _BoolAsInt)
    conn.adapters.register_dumper(str, _TextWithoutNul)


def configure(conn: psycopg.Connection) -> None:
    """Every pool connection: autocommit (a write opens its own transaction), SQLite-like rows."""
    conn.autocommit = True
    _adapt(conn)


async def configure_async(conn: psycopg.AsyncConnection) -> None:
    """The same for the event loop's connections (single statements)."""
    await conn.set_autocommit(True)
    _adapt(conn)


@functools.lru_cache(maxsize=4096)
def translate(sql: str, named: bool) -> tuple[str, bool]:
    """SQLite placeholders to psycopg's: `?` -> %s, `?N` -> %(pN)s, `:name` -> %(name)s, a literal
    % -> %%. Also says whether the statement numbers its parameters (they are then passed by name)."""
    out: list[str] = []
    numbered = False
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'":  # a string literal, copied whole ('' is a quote inside it)
            j = i + 1
            while True:
                j = sql.find("'", j)
                if j == -1:
                    j = n
                    break
                if sql.startswith("''", j):
                    j += 2
                    continue
                j += 1
                break
            out.append(sql[i:j].replace("%", "%%"))
            i = j
            continue
        if c == "?":
            m = _DIGITS.match(sql, i + 1)
            if m is not None:
                numbered = True
                out.append(f"%(p{m.group()})s")
                i = m.end()
                continue
            out.append("%s")
        elif c == "%":
            out.append("%%")
        elif c == ":" and named and i + 1 < n and sql[i + 1] != ":" and (i == 0 or sql[i - 1] != ":"):
            m = _NAME.match(sql, i + 1)
            if m is None:
                out.append(c)
            else:
                out.append(f"%({m.group()})s")
                i = m.end()
                continue
        else:
            out.append(c)
        i += 1
    return "".join(out), numbered


def translated(sql: str, params: Iterable[Any] | Mapping[str, Any]) -> tuple[str, Any]:
    """The statement and its parameters as psycopg takes them."""
    if isinstance(params, Mapping):
        return translate(sql, True)[0], params
    text, numbered = translate(sql, False)
    if numbered:
        return text, {f"p{i}": v for i, v in enumerate(params, 1)}
    return text, tuple(params)


class PgConn:
    """What a write function gets on PostgreSQL: the part of sqlite3.Connection the repositories use."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> psycopg.Cursor:
        cur = self.raw.cursor()
        cur.execute(*translated(sql, params))
        return cur

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> psycopg.Cursor:
        cur = self.raw.cursor()
        cur.executemany(translate(sql, False)[0], [tuple(p) for p in seq])
        return cur


class AsyncCursor:
    """A finished statement's cursor (psycopg keeps the whole result client-side: no I/O left)."""

    def __init__(self, cur: psycopg.Cursor) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount

    async def fetchone(self) -> Row | None:
        return self._cur.fetchone() if self._cur.description else None

    async def fetchall(self) -> list[Row]:
        return self._cur.fetchall() if self._cur.description else []

    async def close(self) -> None:
        self._cur.close()


class _Statement:
    """`await conn.execute(...)` or `async with conn.execute(...) as cur`, as aiosqlite allows."""

    def __init__(self, pending: Awaitable[psycopg.Cursor]) -> None:
        self._pending = pending

    def __await__(self):  # noqa: ANN204
        return self._cursor().__await__()

    async def _cursor(self) -> AsyncCursor:
        return AsyncCursor(await self._pending)

    async def __aenter__(self) -> AsyncCursor:
        return await self._cursor()

    async def __aexit__(self, *exc: object) -> None:
        return None


class AsyncPgConn:
    """The connection a `transaction()` block gets on PostgreSQL: aiosqlite's surface, each statement
    on the engine's threads. `_execute(fn, *args)` with `_conn` runs a write function inside the
    block, as aiosqlite's do (ledger.apply_entry)."""

    def __init__(self, raw: psycopg.Connection, run: Callable[..., Awaitable[Any]]) -> None:
        self._conn = PgConn(raw)
        self._run = run

    def execute(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> _Statement:
        return _Statement(self._run(self._conn.execute, sql, params))

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> AsyncCursor:
        return AsyncCursor(await self._run(self._conn.executemany, sql, list(seq)))

    async def execute_fetchall(self, sql: str, params: Iterable[Any] | Mapping[str, Any] = ()) -> list[Row]:
        return await self._run(_fetchall, self._conn, sql, params)

    async def _execute(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._run(fn, *args)


def _fetchall(conn: PgConn, sql: str, params: Any) -> list[Row]:
    cur = conn.execute(sql, params)
    return cur.fetchall() if cur.description else []

