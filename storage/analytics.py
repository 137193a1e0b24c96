"""Page analytics (page views, time on page, clicks) and the figures `mpgpt report` reads.

`PageEvents.write` stores a batch of tracker events in one group-committed write; a view recorded
twice (a retried beacon) is kept once, and a leave only ever raises the view's visible time. A view
is one screen of the page (its `screen`: login, account, shop, chat); a click or an action on it
marks it engaged.
`WeChatStats` reads the chat side (inbound messages, followers, orders, trials) for the report.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from storage.db import Database

# Paid orders, also after a refund was asked for (the money came in).
_PAID = "('paid', 'refunding', 'refunded')"
# Events are not messages a follower wrote.
_MESSAGE = "kind NOT IN ('event', 'subscribe', 'unsubscribe')"


@dataclass(frozen=True, slots=True)
class PageView:
    view_id: str
    visitor: str
    page: str
    referrer: str
    ip: str
    viewport_w: int
    viewport_h: int
    at: float
    screen: str = ""


@dataclass(frozen=True, slots=True)
class PageLeave:
    view_id: str
    visitor: str
    visible_ms: int


@dataclass(frozen=True, slots=True)
class PageClick:
    view_id: str
    page: str
    x: int
    y: int
    viewport_w: int
    target: str
    at: float
    screen: str = ""


@dataclass(frozen=True, slots=True)
class PageAct:
    """Something done on a view that is not a click: a question asked (Enter sends it), a form sent."""
    view_id: str
    visitor: str


PageEvent = PageView | PageLeave | PageClick | PageAct


@dataclass(frozen=True, slots=True)
class ViewRow:
    visitor: str
    page: str
    ip: str
    started_at: float
    visible_ms: int
    screen: str = ""
    engaged: bool = False


class PageEvents:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, events: Sequence[PageEvent]) -> None:
        views = [(e.view_id, e.visitor, e.page, e.screen, e.referrer, e.ip, e.viewport_w, e.viewport_h, e.at)
                 for e in events if isinstance(e, PageView)]
        leaves = [(e.visible_ms, e.view_id, e.visitor) for e in events if isinstance(e, PageLeave)]
        clicks = [(e.view_id, e.page, e.screen, e.x, e.y, e.viewport_w, e.target, e.at)
                  for e in events if isinstance(e, PageClick)]
        # A click is engagement too; an act names its visitor (a forged view id alone changes nothing).
        engaged = sorted({e.view_id for e in events if isinstance(e, PageClick)})
        acts = [(e.view_id, e.visitor) for e in events if isinstance(e, PageAct)]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO page_views (view_id, visitor, page, screen, referrer, ip, viewport_w, viewport_h,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (view_id) DO NOTHING", views)
            # Views before leaves: a batch may hold both for one page load.
            conn.executemany(
                "UPDATE page_views SET visible_ms = CASE WHEN visible_ms > ? THEN visible_ms ELSE ? END"
                " WHERE view_id = ? AND visitor = ?", [(ms, ms, view, visitor) for ms, view, visitor in leaves])
            conn.executemany(
                "INSERT INTO page_clicks (view_id, page, screen, x, y, viewport_w, target, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", clicks)
            conn.executemany("UPDATE page_views SET engaged = 1 WHERE view_id = ? AND engaged = 0",
                             [(v,) for v in engaged])
            conn.executemany("UPDATE page_views SET engaged = 1 WHERE view_id = ? AND visitor = ? AND engaged = 0",
                             acts)

        await self.db.write(run)

    async def prune(self, before: float) -> int:
        """Delete views and clicks older than `before`; returns how many rows went."""
        def run(conn: sqlite3.Connection) -> int:
            gone = conn.execute("DELETE FROM page_views WHERE started_at < ?", (before,)).rowcount
            return gone + conn.execute("DELETE FROM page_clicks WHERE created_at < ?", (before,)).rowcount

        return await self.db.write(run)

    async def views(self, since: float, until: float) -> list[ViewRow]:
        rows = await self.db.fetchall(
            "SELECT visitor, page, screen, ip, started_at, visible_ms, engaged FROM page_views"
            " WHERE started_at >= ? AND started_at < ? ORDER BY started_at", (since, until))
        return [ViewRow(r["visitor"], r["page"], r["ip"], r["started_at"], r["visible_ms"], r["screen"],
                        bool(r["engaged"])) for r in rows]

    async def clicks(self, page: str, since: float, screen: str | None = None, min_width: int = 0,
                     max_width: int = 1 << 30) -> list[tuple[int, int, int]]:
        """(x, y, viewport width) of every click on `page` since then: on one screen of it when `screen`
        is given, made at a viewport width in [min_width, max_width)."""
        sql = ("SELECT x, y, viewport_w FROM page_clicks WHERE page = ? AND created_at >= ?"
               " AND viewport_w >= ? AND viewport_w < ?")
        params: list[object] = [page, since, min_width, max_width]
        if screen is not None:
            sql += " AND screen = ?"
            params.append(screen)
        rows = await self.db.fetchall(sql, params)
        return [(r["x"], r["y"], r["viewport_w"]) for r in rows]


@dataclass(frozen=True, slots=True)
class DayActivity:
    messages: int
    active_users: int
    new_followers: int
    paying_users: int


class WeChatStats:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def day(self, start: float, end: float) -> DayActivity:
        """The chat side of [start, end): messages written, who wrote, who followed, who paid."""
        # Positional parameters: Database.fetchone takes a sequence.
        row = await self.db.fetchone(
            f"SELECT (SELECT COUNT(*) FROM inbound WHERE received_at >= ?1 AND received_at < ?2 AND {_MESSAGE})"
            " AS messages,"
            f" (SELECT COUNT(DISTINCT openid) FROM inbound WHERE received_at >= ?1 AND received_at < ?2"
            f" AND {_MESSAGE}) AS active,"
            " (SELECT COUNT(*) FROM users WHERE subscribed_at >= ?1 AND subscribed_at < ?2) AS followers,"
            f" (SELECT COUNT(DISTINCT openid) FROM orders WHERE paid_at >= ?1 AND paid_at < ?2"
            f" AND state IN {_PAID}) AS paying", (start, end))
        assert row is not None
        return DayActivity(row["messages"], row["active"], row["followers"], row["paying"])

    async def trial_conversion(self, start: float, end: float) -> tuple[int, int]:
        """(accounts opened with a trial in [start, end), how many of them have paid since)."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS opened, COUNT(p.openid) AS paid FROM ledger l"
            f" LEFT JOIN (SELECT DISTINCT openid FROM orders WHERE state IN {_PAID}) p ON p.openid = l.openid"
            " WHERE l.kind = 'trial' AND l.created_at >= ? AND l.created_at < ?", (start, end))
        assert row is not None
        return row["opened"], row["paid"]


async def prune_page_events(db: Database, retention_days: int, now: float | None = None) -> int:
    """Delete analytics older than `retention_days` ([analytics] retention_days); `mpgpt prune` calls this."""
    now = time.time() if now is None else now
    return await PageEvents(db).prune(now - retention_days * 86400)
