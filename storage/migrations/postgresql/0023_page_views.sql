-- Port of ../0023_page_views.sql.
ALTER TABLE page_views ADD COLUMN screen TEXT NOT NULL DEFAULT '';
ALTER TABLE page_views ADD COLUMN engaged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE page_clicks ADD COLUMN screen TEXT NOT NULL DEFAULT '';
CREATE INDEX page_clicks_screen ON page_clicks (page, screen, created_at);
