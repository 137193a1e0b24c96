"""The owner's maintenance commands (`mpgpt users|credits|whitelist|products|orders|codes|invites|channels|
words|backup|prune|menu|doctor|audit`), one module per family, each with `register(subparsers)`.

They open the server's database the way the server does and change it only through the server's
repositories, one transaction per change with its audit row (storage.audit), so they are safe while
`mpgpt serve` runs on the same database. Heavy dependencies (aiohttp, WeChat Pay, the providers)
are imported inside the commands that use them, so every other command starts quickly.
"""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    from scripts.owner import (audit_log, channels, codes, credits, doctor, invites, maintenance, menu, orders,
                               products, users, words)

    for module in (users, credits, products, orders, codes, invites, channels, words, maintenance, menu, doctor,
                   audit_log):
        module.register(subparsers)
