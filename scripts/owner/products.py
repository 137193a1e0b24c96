"""`mpgpt products list|add|update|enable|disable`: what followers can buy, changed while the server runs.

The pay service reads the products table when an order is created (and every job round), so a
change is on sale at once; an order already open keeps the price and credits it was created with.
Config [[products]] seed the table: a config product whose id is new is added, the others are left
as changed here.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from scripts.owner.kit import Ctx, OwnerError, group, leaf, plural, positive_int, table, yuan
from storage.products import Product, ProductRepo

_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def product_id(text: str) -> str:
    if not _ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a product id is 1-32 letters, digits, _ or -")
    return text


def product_name(text: str) -> str:
    # The name is WeChat Pay's order description: at most 127 characters.
    if not text.strip() or len(text.strip()) > 127:
        raise argparse.ArgumentTypeError("a product name is 1-127 characters")
    return text.strip()


def register(subparsers: Any) -> None:
    products = group(subparsers, "products", "what followers can buy (top-up products)")
    leaf(products, "list", "every product, on sale or not", products_list)
    p = leaf(products, "add", "put a new product on sale", products_add)
    p.add_argument("id", type=product_id, help="product id (1-32 letters, digits, _ or -)")
    p.add_argument("--name", required=True, type=product_name, help="shown to buyers and on the WeChat Pay order")
    p.add_argument("--credits", type=positive_int, default=0, help="credits it gives (may be left out for a plan)")
    p.add_argument("--price-fen", required=True, type=positive_int, help="price in fen (600 = ¥6.00)")
    p.add_argument("--tier", default="", help="a membership plan: the tier it grants (with --days)")
    p.add_argument("--days", type=positive_int, default=0, help="the plan's days (buying again extends it)")
    p.add_argument("--disabled", action="store_true", help="add it without putting it on sale")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    p = leaf(products, "update", "change a product's name, credits or price", products_update)
    p.add_argument("id", type=product_id, help="product id")
    p.add_argument("--name", type=product_name, help="new name")
    p.add_argument("--credits", type=positive_int, help="new credits")
    p.add_argument("--price-fen", type=positive_int, help="new price in fen")
    p.add_argument("--reason", default="", help="why (kept in the audit trail)")
    for name, fn, what in (("enable", products_enable, "put a product on sale"),
                           ("disable", products_disable, "take a product off sale")):
        p = leaf(products, name, what, fn)
        p.add_argument("id", type=product_id, help="product id")
        p.add_argument("--reason", default="", help="why (kept in the audit trail)")


def _row(p: Product) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "credits": p.credits, "price_fen": p.price_fen, "enabled": p.enabled,
            "tier": p.tier or None, "days": p.days}


def _plan(p: Product) -> str:
    return f"{p.tier} {p.days}d" if p.days else "-"


async def _repo(ctx: Ctx, db: Any = None) -> ProductRepo:
    repo = ProductRepo(db or ctx.db)
    await repo.seed(ctx.cfg.products)  # what the server does on its first order; a no-op after that
    return repo


async def products_list(ctx: Ctx) -> None:
    items = await (await _repo(ctx)).all()
    ctx.emit([_row(p) for p in items], lambda: table(
        [(p.id, p.name, p.credits, _plan(p), yuan(p.price_fen), "on sale" if p.enabled else "off") for p in items],
        ("ID", "NAME", "CREDITS", "PLAN", "PRICE", "STATE")))


async def products_add(ctx: Ctx) -> None:
    a = ctx.args
    await _repo(ctx)
    if bool(a.tier) != bool(a.days):
        raise OwnerError("--tier and --days go together (a plan needs both)")
    if a.tier == "free":
        raise OwnerError("--tier free is what every follower has; a plan grants another tier")
    if a.tier and ctx.cfg.rules.tier_models and a.tier not in ctx.cfg.rules.tier_models:
        raise OwnerError(f"tier {a.tier!r} is not in rules.tier_models ({', '.join(ctx.cfg.rules.tier_models)})")
    if not a.credits and not a.days:
        raise OwnerError("give --credits, or a plan with --tier and --days")
    product = Product(a.id, a.name, a.credits, a.price_fen, not a.disabled, a.tier, a.days)
    async with ctx.change("products.add", a.id, a.reason) as ch:
        if not await ProductRepo(ch.db).add(product):
            raise OwnerError(f"product {a.id!r} exists already (use `mpgpt products update`)")
        ch.detail["product"] = _row(product)
    notes = _notes(ctx, a.name)
    ctx.emit({**_row(product), "audit_id": ch.id, "notes": notes},
             f"added {a.id}: {a.name}, " + " + ".join(x for x in (plural(a.credits, "credit") if a.credits else "",
                                                                 f"{a.tier} for {plural(a.days, 'day')}" if a.days else "") if x)
             + f" for {yuan(a.price_fen)}"
             + ("" if product.enabled else " (not on sale)") + "".join(f"\nnote: {n}" for n in notes))


def _notes(ctx: Ctx, name: str) -> list[str]:
    """What the owner should know about a product just added: whether anyone can buy it yet, and a
    name that calls the unit by another name than the chat and the page do."""
    notes = []
    if not ctx.cfg.pay.enabled:
        notes.append("top-ups are off: the config has no [pay] table, so the page shows no products"
                     " until WeChat Pay is set up (README: WeChat Pay)")
    unit = ctx.cfg.texts.unit
    other = next((w for w in ("积分", "点") if w != unit and re.search(rf"\d\s*{w}", name)), None)
    if other:
        notes.append(f"the name says {other!r} but the chat and the page call the unit {unit!r} ([texts] unit)")
    return notes


async def _update(ctx: Ctx, action: str, **fields: Any) -> None:
    a = ctx.args
    await _repo(ctx)
    async with ctx.change(action, a.id, a.reason) as ch:
        changed = await ProductRepo(ch.db).update(a.id, **fields)
        if changed is None:
            raise OwnerError(f"unknown product {a.id!r} (see `mpgpt products list`)")
        before, after = changed
        ch.detail.update(before=_row(before), after=_row(after))
    ctx.emit({**_row(after), "audit_id": ch.id}, lambda: table(
        [("before", before.name, before.credits, yuan(before.price_fen), "on sale" if before.enabled else "off"),
         ("after", after.name, after.credits, yuan(after.price_fen), "on sale" if after.enabled else "off")],
        (a.id, "NAME", "CREDITS", "PRICE", "STATE")))


async def products_update(ctx: Ctx) -> None:
    a = ctx.args
    if a.name is None and a.credits is None and a.price_fen is None:
        raise OwnerError("nothing to change: give --name, --credits or --price-fen")
    await _update(ctx, "products.update", name=a.name, credits=a.credits, price_fen=a.price_fen)


async def products_enable(ctx: Ctx) -> None:
    await _update(ctx, "products.enable", enabled=True)


async def products_disable(ctx: Ctx) -> None:
    await _update(ctx, "products.disable", enabled=False)
