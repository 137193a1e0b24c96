-- Companion-page analytics (issue 6): one row per page view, one per click. No openids here: the
-- visitor is an anonymous id the page keeps in localStorage. Rows older than [analytics]
-- retention_days are deleted by `mpgpt prune`.

CREATE TABLE page_views (
    -- drawn by the tracker for one page load; its leave and click events carry it
    view_id    TEXT PRIMARY KEY,
    visitor    TEXT NOT NULL,
    -- the path only: a query string may carry a login code or an OAuth code
    page       TEXT NOT NULL,
    -- origin + path only, '' when there was none
    referrer   TEXT NOT NULL DEFAULT '',
    ip         TEXT NOT NULL,
    viewport_w INTEGER NOT NULL,
    viewport_h INTEGER NOT NULL,
    started_at REAL NOT NULL,
    -- milliseconds the page was visible: the largest total the tracker reported (0 until it left)
    visible_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX page_views_started ON page_views (started_at);

CREATE TABLE page_clicks (
    id         INTEGER PRIMARY KEY,
    view_id    TEXT NOT NULL,
    page       TEXT NOT NULL,
    -- position on the page (not the screen: scrolling is included), in CSS pixels
    x          INTEGER NOT NULL,
    y          INTEGER NOT NULL,
    -- the viewport width the page was laid out for when the click happened
    viewport_w INTEGER NOT NULL,
    -- the clicked element as a short CSS-like path (main>div.card>button#pay)
    target     TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX page_clicks_page ON page_clicks (page, created_at);
CREATE INDEX page_clicks_created ON page_clicks (created_at);
