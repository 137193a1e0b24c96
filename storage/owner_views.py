"""Read-only queries behind the owner's list and show commands (users, their usage, orders).

Nothing here writes: changes go through the repositories the server uses (ledger, accounts, orders).
"""

from __future__ import annotations

from typing import Any

from storage.db import Database

PAID_STATES = ("paid", "refunding", "refunded")

# Everyone we know of: a follower who wrote (users) or an account the owner or a payment made.
_PEOPLE = """
WITH ids AS (SELECT openid FROM users UNION SELECT openid FROM accounts)
SELECT ids.openid, u.first_seen, u.last_seen, COALESCE(u.subscribed, 0) AS subscribed, u.model,
       COALESCE(a.status, 'active') AS status, COALESCE(a.tier, 'free') AS tier,
       COALESCE(a.balance, 0) AS balance, COALESCE(a.daily, 0) AS daily, a.daily_day,
       COALESCE(a.balance_milli, 0) AS balance_milli, COALESCE(a.daily_milli, 0) AS daily_milli,
       CASE WHEN EXISTS (SELECT 1 FROM whitelist w WHERE w.openid = ids.openid) THEN 1 ELSE 0 END
         AS whitelisted,
       (SELECT COALESCE(SUM(o.amount_fen), 0) FROM orders o
         WHERE o.openid = ids.openid AND o.state IN ('paid', 'refunding', 'refunded')) AS paid_fen
FROM ids LEFT JOIN users u ON u.openid = ids.openid LEFT JOIN accounts a ON a.openid = ids.openid
"""


class OwnerViews:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def resolve_user(self, text: str) -> list[str]:
        """Openids matching `text`: the exact one, else those ending in it (logs show the last 6
        characters of an openid). At most a few, so the caller can say 'ambiguous'."""
        rows = await self.db.fetchall(
            "SELECT openid FROM users WHERE openid = ?1 UNION SELECT openid FROM accounts WHERE openid = ?1",
            (text,))
        if rows or len(text) < 4:
            return [r["openid"] for r in rows]
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self.db.fetchall(
            "SELECT openid FROM users WHERE openid LIKE ?1 ESCAPE '\\'"
            " UNION SELECT openid FROM accounts WHERE openid LIKE ?1 ESCAPE '\\' LIMIT 5", (pattern,))
        return sorted(r["openid"] for r in rows)

    async def users(self, *, frozen: bool | None = None, paying: bool = False, active_since: float | None = None,
                    whitelisted: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        """Newest activity first."""
        where, params = [], []
        if frozen is not None:
            where.append("status = ?")
            params.append("frozen" if frozen else "active")
        if paying:
            where.append("paid_fen > 0")
        if whitelisted:
            where.append("whitelisted = 1")
        if active_since is not None:
            where.append("last_seen >= ?")
            params.append(active_since)
        sql = f"SELECT * FROM ({_PEOPLE}) AS people" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY COALESCE(last_seen, 0) DESC, openid LIMIT ?"
        return [dict(r) for r in await self.db.fetchall(sql, (*params, limit))]

    async def user(self, openid: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(f"SELECT * FROM ({_PEOPLE}) AS people WHERE openid = ?", (openid,))
        return dict(row) if row else None

    async def usage(self, openid: str) -> dict[str, Any]:
        """Questions asked and, per model, channel attempts and tokens."""
        answers = await self.db.fetchone(
            "SELECT COUNT(*) AS questions, MAX(created_at) AS last_question,"
            " COUNT(*) FILTER (WHERE status = 'done') AS done,"
            " COUNT(*) FILTER (WHERE status != 'done' AND status != 'generating') AS not_done"
            " FROM answers WHERE openid = ?", (openid,))
        models = await self.db.fetchall(
            "SELECT model, COUNT(*) AS attempts, COUNT(*) FILTER (WHERE outcome = 'ok') AS ok,"
            " SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens"
            " FROM generations WHERE openid = ? GROUP BY model ORDER BY attempts DESC", (openid,))
        out = dict(answers) if answers else {}
        return {"questions": out.get("questions") or 0, "answered": out.get("done") or 0,
                "not_answered": out.get("not_done") or 0, "last_question": out.get("last_question"),
                "models": [dict(r) for r in models]}

    async def orders(self, *, state: str | None = None, openid: str | None = None, flagged: bool = False,
                     limit: int = 50) -> list[dict[str, Any]]:
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if openid is not None:
            where.append("openid = ?")
            params.append(openid)
        if flagged:
            where.append("flagged = 1")
        sql = "SELECT * FROM orders" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC LIMIT ?"
        return [dict(r) for r in await self.db.fetchall(sql, (*params, limit))]

    async def refund(self, out_trade_no: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM refunds WHERE out_trade_no = ?", (out_trade_no,))
        return dict(row) if row else None
