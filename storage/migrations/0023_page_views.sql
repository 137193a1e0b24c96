-- The companion page is a single-page app (issue 16): each screen a follower opens (login, account,
-- shop, chat) is recorded as its own page view, and its clicks carry the screen, so a heatmap shows
-- only the clicks made on what was on screen. `engaged` marks a view with a click or an action (a
-- question asked, a form sent): a session with one engaged view is not a bounce.
ALTER TABLE page_views ADD COLUMN screen TEXT NOT NULL DEFAULT '';
ALTER TABLE page_views ADD COLUMN engaged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE page_clicks ADD COLUMN screen TEXT NOT NULL DEFAULT '';
CREATE INDEX page_clicks_screen ON page_clicks (page, screen, created_at);
