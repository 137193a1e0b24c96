"""`mpgpt report`: the companion page's traffic and the chat side, per day and per page.

    mpgpt report [--days N] [--json]
    mpgpt report --heatmap PAGE[#SCREEN] --out FILE.png [--device phone|desktop] [--url BASE] [--width PX]

Page figures: PV (views), UV (distinct visitors), unique IPs, bounce rate and average visible time.
The companion page is a single-page app: each screen opened (login, account, shop, chat) is a view
of its own, reported as PAGE#SCREEN ("/#chat"). A session is one visitor's views with less than 30
minutes between them; it bounces when it has one view and nothing was done on it (no click, no
question asked, no form sent), and it belongs to the page and the day it started on. Days are calendar days in
[quota] timezone. The chat side: messages written (not events), users who wrote, new followers,
users who paid, and how many accounts opened in the period (each gets its trial) have paid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from storage.analytics import PageEvents, ViewRow, WeChatStats

SESSION_GAP = 30 * 60
# Viewport widths (CSS pixels, [low, high)) whose clicks share a heatmap: a phone's layout is not a desktop's.
DEVICES = {"phone": (0, 768), "desktop": (768, 1 << 30)}


@dataclass
class PageFigures:
    pv: int = 0
    uv: int = 0
    ips: int = 0
    sessions: int = 0
    bounces: int = 0
    # mean visible time of the views that reported one, in seconds
    avg_seconds: float | None = None

    @property
    def bounce_rate(self) -> float | None:
        return self.bounces / self.sessions if self.sessions else None


@dataclass
class _Tally:
    views: int = 0
    visitors: set[str] = field(default_factory=set)
    ips: set[str] = field(default_factory=set)
    sessions: int = 0
    bounces: int = 0
    visible: list[int] = field(default_factory=list)

    def figures(self) -> PageFigures:
        avg = sum(self.visible) / len(self.visible) / 1000 if self.visible else None
        return PageFigures(self.views, len(self.visitors), len(self.ips), self.sessions, self.bounces, avg)


def page_figures(views: Sequence[ViewRow], tz: ZoneInfo) -> dict[str, dict[str, PageFigures]]:
    """{"total": {"": ...}, "by_day": {day: ...}, "by_page": {page: ...}} from the period's views."""
    total, by_day, by_page = _Tally(), defaultdict(_Tally), defaultdict(_Tally)
    for v in views:
        day = datetime.fromtimestamp(v.started_at, tz).date().isoformat()
        for t in (total, by_day[day], by_page[_name(v)]):
            t.views += 1
            t.visitors.add(v.visitor)
            t.ips.add(v.ip)
            if v.visible_ms > 0:
                t.visible.append(v.visible_ms)
    for first, count, engaged in _sessions(views):
        day = datetime.fromtimestamp(first.started_at, tz).date().isoformat()
        for t in (total, by_day[day], by_page[_name(first)]):
            t.sessions += 1
            t.bounces += count == 1 and not engaged
    return {"total": {"": total.figures()},
            "by_day": {d: t.figures() for d, t in sorted(by_day.items())},
            "by_page": {p: t.figures() for p, t in sorted(by_page.items())}}


def _name(v: ViewRow) -> str:
    """The page a view counts for: its path, and its screen when the page has screens ("/#chat")."""
    return f"{v.page}#{v.screen}" if v.screen else v.page


def _sessions(views: Iterable[ViewRow]) -> list[tuple[ViewRow, int, bool]]:
    """(first view, number of views, anything done in it) of every session."""
    by_visitor: dict[str, list[ViewRow]] = defaultdict(list)
    for v in views:
        by_visitor[v.visitor].append(v)
    out = []
    for rows in by_visitor.values():
        rows.sort(key=lambda r: r.started_at)
        first, count, engaged, last = rows[0], 1, rows[0].engaged, rows[0].started_at
        for r in rows[1:]:
            if r.started_at - last >= SESSION_GAP:
                out.append((first, count, engaged))
                first, count, engaged = r, 0, False
            count += 1
            engaged = engaged or r.engaged
            last = r.started_at
        out.append((first, count, engaged))
    return out


def day_bounds(days: int, tz: ZoneInfo, now: float) -> list[tuple[str, float, float]]:
    """The last `days` calendar days in `tz`, today included: (day, start, end)."""
    today = datetime.fromtimestamp(now, tz).date()
    out = []
    for i in range(days - 1, -1, -1):
        d = today - timedelta(days=i)
        start = datetime(d.year, d.month, d.day, tzinfo=tz)
        end = datetime.combine(d + timedelta(days=1), datetime.min.time(), tz)
        out.append((d.isoformat(), start.timestamp(), end.timestamp()))
    return out


async def build_report(db: Any, days: int, tz: ZoneInfo, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    bounds = day_bounds(days, tz, now)
    start, end = bounds[0][1], bounds[-1][2]
    pages = page_figures(await PageEvents(db).views(start, end), tz)
    stats = WeChatStats(db)
    chat_days = {d: asdict(await stats.day(s, e)) for d, s, e in bounds}
    opened, paid = await stats.trial_conversion(start, end)

    def plain(figs: dict[str, PageFigures]) -> dict[str, dict[str, Any]]:
        return {k: {**asdict(f), "bounce_rate": f.bounce_rate} for k, f in figs.items()}

    return {
        "from": bounds[0][0], "to": bounds[-1][0], "timezone": tz.key,
        "page": {"total": plain(pages["total"])[""],
                 "by_day": plain({d: pages["by_day"].get(d, PageFigures()) for d, _, _ in bounds}),
                 "by_page": plain(pages["by_page"])},
        "wechat": {"by_day": chat_days, "total": asdict(await stats.day(start, end)),
                   "trial_accounts": opened, "trial_accounts_paid": paid,
                   "trial_conversion": paid / opened if opened else None},
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}s"


def format_report(r: dict[str, Any]) -> str:
    def head(name: str) -> str:
        return f"{name:<24}{'PV':>7}{'UV':>7}{'IPs':>7}{'bounce':>9}{'avg time':>10}"

    def row(name: str, f: dict[str, Any]) -> str:
        return (f"{name[:23]:<24}{f['pv']:>7}{f['uv']:>7}{f['ips']:>7}{_pct(f['bounce_rate']):>9}"
                f"{_secs(f['avg_seconds']):>10}")

    p, w = r["page"], r["wechat"]
    lines = [f"Companion page, {r['from']} .. {r['to']} ({r['timezone']})", head("day")]
    lines += [row(d, f) for d, f in p["by_day"].items()]
    lines += [row("total", p["total"]), "", head("page")]
    lines += [row(page, f) for page, f in p["by_page"].items()]
    lines += ["", "WeChat", f"{'day':<24}{'messages':>10}{'active':>8}{'followed':>10}{'paying':>8}"]
    for d, f in [*w["by_day"].items(), ("total", w["total"])]:
        lines.append(f"{d:<24}{f['messages']:>10}{f['active_users']:>8}{f['new_followers']:>10}{f['paying_users']:>8}")
    lines.append(f"trial -> paid: {w['trial_accounts_paid']} of {w['trial_accounts']} accounts opened in the period"
                 f" have paid ({_pct(w['trial_conversion'])})")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from bot.logs import setup_logging
    from scripts.composition import config_from_args, database

    cfg = config_from_args(args)
    setup_logging(cfg.log.level, cfg.log.format)  # log lines to stderr: stdout carries the report
    if args.days < 1:
        raise SystemExit("mpgpt report: --days must be at least 1")
    if args.heatmap is not None and not args.out:
        raise SystemExit("mpgpt report: --heatmap needs --out FILE.png")
    if args.width and not 200 <= args.width <= 4000:
        raise SystemExit("mpgpt report: --width must be between 200 and 4000")
    tz = ZoneInfo(cfg.quota.timezone)

    async def run() -> int:
        db = database(cfg)
        await db.open()
        try:
            if args.heatmap is not None:
                return await _heatmap(args, cfg, db, tz)
            report = await build_report(db, args.days, tz)
        finally:
            await db.close()
        print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report))
        return 0

    return asyncio.run(run())


async def _heatmap(args: argparse.Namespace, cfg: Any, db: Any, tz: ZoneInfo) -> int:
    from scripts.heatmap import render

    name = args.heatmap if args.heatmap.startswith("/") else "/" + args.heatmap
    page, _, screen = name.partition("#")
    low, high = DEVICES[args.device]
    width = args.width or (390 if args.device == "phone" else 1280)
    since = day_bounds(args.days, tz, time.time())[0][1]
    clicks = await PageEvents(db).clicks(page, since, screen or None, low, high)
    base = args.url or cfg.server.public_url or f"http://127.0.0.1:{cfg.server.port}"
    # the page opens the screen asked for without a login (`#preview=`), so the heat lies on that screen
    url = None if args.no_browser else base.rstrip("/") + page + (f"#preview={screen}" if screen else "")
    kind = await render(name, clicks, args.out, url=url, width=width, height=844 if args.device == "phone" else 800)
    print(f"{args.out}: {len(clicks)} clicks on {name} from {args.device}s over a {kind}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("report", help="page views, visitors, bounce rate and the chat side; click heatmaps")
    p.add_argument("--days", type=int, default=7, help="the last N calendar days, today included (default 7)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--heatmap", metavar="PAGE", help="draw PAGE's clicks as a heatmap instead (e.g. /, or /#chat"
                   " for one screen: login, account, shop, chat)")
    p.add_argument("--device", choices=sorted(DEVICES), default="phone",
                   help="whose clicks: phones (viewport under 768 px, the default) or desktops")
    p.add_argument("--out", metavar="FILE.png", help="where the heatmap goes")
    p.add_argument("--url", help="the server's address for the screenshot (default: server.public_url)")
    p.add_argument("--width", type=int, default=0,
                   help="picture width in CSS pixels (default 390 for phones, 1280 for desktops)")
    p.add_argument("--no-browser", action="store_true", help="draw over a plain outline, without chromium")
    p.set_defaults(func=_run)
