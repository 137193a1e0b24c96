"""What of a follower's identity may appear in logs and owner output.

In storage, the bottom layer, because every layer logs users (the ledger as much as the edge)."""

from __future__ import annotations


def short_user(openid: str) -> str:
    """Enough of the openid to follow one user through logs without logging the whole id."""
    return openid[-6:]
