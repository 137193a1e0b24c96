"""Shared set-up for the WeChat Pay tests: a [pay] config pointing at the fake, the database, the ledger."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bot.config import Config, config_from_dict
from bot.pay.client import PayClient
from bot.pay.service import PayService
from storage.db import Database
from storage.ledger import Entry, Ledger, apply_entry
from storage.orders import ApplyEntry, OrderRepo
from tests.fakes.wechatpay import FakeWeChatPay, PayKeys

OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
PRODUCTS = [
    {"id": "p6", "name": "600 积分", "credits": 600, "price_fen": 600},
    {"id": "p30", "name": "3500 积分", "credits": 3500, "price_fen": 3000},
    {"id": "old", "name": "下架商品", "credits": 10, "price_fen": 10, "enabled": False},
]
# Timing scaled down: nothing in these tests waits for real-world minutes.
FAST_PAY = {"order_expiry": 30.0, "query_after": 0.05, "job_interval": 0.05, "api_timeout": 3.0}


def config_data(tmp_path: Path, fake: FakeWeChatPay, *, mode: str | None = None,
                notify_url: str = "https://pay.example.com/api/pay/notify", **pay: Any) -> dict[str, Any]:
    keys: PayKeys = fake.keys
    files = keys.write(tmp_path / "keys")
    mode = mode or fake.mode
    section: dict[str, Any] = {
        "mchid": fake.mchid, "app_id": fake.appid, "api_base": fake.base_url,
        "private_key_path": files["private_key_path"], "cert_serial_no": keys.merchant_serial,
        "apiv3_key": keys.apiv3_key, "notify_url": notify_url, **FAST_PAY,
    }
    if mode in ("public_key", "both"):
        section.update(public_key_path=files["public_key_path"], public_key_id=keys.public_key_id)
    if mode in ("certificate", "both"):
        section["cert_dir"] = str(tmp_path / "certs")
    section.update(pay)
    return {
        "storage": {"path": str(tmp_path / "mpgpt.db")},
        "wechat": {"token": "test-token", "app_id": fake.appid},
        "channels": [{"name": "fake", "provider": "openai", "api_key": "sk-test", "models": ["gpt-4o-mini"]}],
        "log": {"level": "warning", "format": "json"},
        "pay": section,
        "products": copy.deepcopy(PRODUCTS),
    }


def pay_config(tmp_path: Path, fake: FakeWeChatPay, **kw: Any) -> Config:
    return config_from_dict(config_data(tmp_path, fake, **kw), base_dir=str(tmp_path))


async def open_db(path: Path) -> Database:
    return await Database(path).open()


def ledger_apply_entry() -> ApplyEntry:
    return apply_entry


async def balance(db: Database, openid: str = OPENID) -> int:
    return await Ledger(db).balance(openid)


async def topups(db: Database, openid: str = OPENID) -> list[Entry]:
    return [e for e in await Ledger(db).history(openid, limit=100) if e.kind == "topup"]


async def books_balance(db: Database) -> bool:
    """The ledger's own invariant: every account equals the sum of its ledger rows."""
    return await Ledger(db).check_invariant() == []


def make_service(cfg: Config, db: Database, client: PayClient, **kw: Any) -> PayService:
    return PayService(cfg.pay, cfg.products, OrderRepo(db, ledger_apply_entry()), client, **kw)
