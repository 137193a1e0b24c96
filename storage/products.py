"""What followers can buy: the products table, seeded from config [[products]], managed by the owner.

Seeding adds the config's products whose id is not in the table yet and leaves the others as the
owner made them: after the first start the table is the truth, the config only brings new ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from storage.db import Database
from storage.dialect import serialize_async


class ProductLike(Protocol):
    """A config ProductConfig or a stored Product."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def credits(self) -> int: ...
    @property
    def price_fen(self) -> int: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def tier(self) -> str: ...
    @property
    def days(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    credits: int
    price_fen: int
    enabled: bool = True
    # a membership plan: `tier` for `days` days ("" and 0: none)
    tier: str = ""
    days: int = 0


def _product(row: Any) -> Product:
    return Product(row["id"], row["name"], row["credits"], row["price_fen"], bool(row["enabled"]), row["tier"],
                   row["days"])


class ProductRepo:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def seed(self, products: Iterable[ProductLike]) -> list[str]:
        """Add the products whose id is new; the ids added. Idempotent, safe in two processes at once."""
        items = list(products)
        if not items:
            return []
        added = []
        now = self.clock()
        async with self.db.transaction() as conn:
            await serialize_async(conn, "products")  # positions follow one another across hosts
            rows = list(await conn.execute_fetchall("SELECT COALESCE(MAX(position), 0) AS p FROM products"))
            position = rows[0]["p"]
            for p in items:
                position += 1
                inserted = await conn.execute_fetchall(
                    "INSERT INTO products (id, name, credits, price_fen, enabled, position, created_at, updated_at,"
                    " tier, days) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                    (p.id, p.name, p.credits, p.price_fen, int(p.enabled), position, now, now, p.tier, p.days))
                if list(inserted):
                    added.append(p.id)
        return added

    async def all(self) -> list[Product]:
        rows = await self.db.fetchall("SELECT * FROM products ORDER BY position, id")
        return [_product(r) for r in rows]

    async def get(self, product_id: str) -> Product | None:
        row = await self.db.fetchone("SELECT * FROM products WHERE id = ?", (product_id,))
        return _product(row) if row else None

    async def add(self, p: ProductLike) -> bool:
        """False when the id exists already (nothing changes)."""
        now = self.clock()
        async with self.db.transaction() as conn:
            await serialize_async(conn, "products")
            rows = await conn.execute_fetchall(
                "INSERT INTO products (id, name, credits, price_fen, enabled, position, created_at, updated_at,"
                " tier, days) SELECT ?, ?, ?, ?, ?, COALESCE(MAX(position), 0) + 1, ?, ?, ?, ? FROM products"
                " WHERE true ON CONFLICT (id) DO NOTHING RETURNING id",
                (p.id, p.name, p.credits, p.price_fen, int(p.enabled), now, now, p.tier, p.days))
            return bool(list(rows))

    async def update(self, product_id: str, *, name: str | None = None, credits: int | None = None,
                     price_fen: int | None = None, enabled: bool | None = None) -> tuple[Product, Product] | None:
        """Change the given fields; (before, after), or None for an unknown id."""
        async with self.db.transaction() as conn:
            before = list(await conn.execute_fetchall("SELECT * FROM products WHERE id = ?", (product_id,)))
            if not before:
                return None
            after = list(await conn.execute_fetchall(
                "UPDATE products SET name = COALESCE(?, name), credits = COALESCE(?, credits),"
                " price_fen = COALESCE(?, price_fen), enabled = COALESCE(?, enabled), updated_at = ?"
                " WHERE id = ? RETURNING *",
                (name, credits, price_fen, None if enabled is None else int(enabled), self.clock(), product_id)))
            return _product(before[0]), _product(after[0])
