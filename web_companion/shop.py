"""Products and orders as the page sees them; the paying itself is bot.pay's PayService.

Inside WeChat's browser an order is paid with JSAPI (the page calls WeixinJSBridge with the signed
parameters); elsewhere with Native, whose `code_url` the page shows as a QR code to scan in WeChat.
The page's word on a payment is never trusted: it polls the order, which only the verified notify
(or the query job) marks paid.
"""

from __future__ import annotations

from typing import Any

import segno

from bot.pay.service import Checkout
from storage.orders import SETTLED, Order
from storage.products import ProductLike

NOT_OPEN = "充值暂未开放，敬请期待。"


def in_wechat(user_agent: str) -> bool:
    """WeChat's own browser (phones and the desktop app) says MicroMessenger in its User-Agent."""
    return "MicroMessenger" in user_agent


def gives(credits: int, tier: str, days: int, unit: str = "积分") -> str:
    """What a purchase brings, as the page shows it: "VIP 会员 30 天 + 100 积分" (`unit`: [texts] unit)."""
    parts = [f"{tier.upper()} 会员 {days} 天"] if days else []
    return " + ".join(parts + ([f"{credits} {unit}"] if credits else []))


def product_view(p: ProductLike, unit: str = "积分") -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "credits": p.credits, "price_fen": p.price_fen,
            "price": f"{p.price_fen // 100}.{p.price_fen % 100:02d}", "tier": p.tier or None, "days": p.days, "gives": gives(p.credits, p.tier, p.days, unit)}


def qr_svg(code_url: str) -> str:
    """The Native code_url as a QR code, an SVG data URI for an <img> (no markup enters the page)."""
    return segno.make(code_url, error="m").svg_data_uri(scale=6, border=2)


def order_view(order: Order, checkout: Checkout | None = None, unit: str = "积分") -> dict[str, Any]:
    view: dict[str, Any] = {
        "out_trade_no": order.out_trade_no, "product_id": order.product_id, "credits": order.credits,
        "tier": order.plan_tier or None, "days": order.plan_days,
        "gives": gives(order.credits, order.plan_tier, order.plan_days, unit),
        "amount_fen": order.amount_fen, "kind": order.kind, "state": order.state,
        "paid": order.state in SETTLED, "expires_at": order.expires_at,
    }
    if checkout is not None:
        view["reused"] = checkout.reused
        if order.kind == "native" and order.code_url:
            view["qr_svg"] = qr_svg(order.code_url)
        if checkout.jsapi_params is not None:
            view["jsapi"] = checkout.jsapi_params
    return view
