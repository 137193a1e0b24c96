-- Several hosts on one database (issue 14): what SQLite's single writer used to guarantee is now
-- said by the schema, so it holds on PostgreSQL too.
--
-- A follower has at most one open conversation: two hosts opening one at once cannot both succeed.
-- Older duplicates (none are expected) are closed first, the latest stays open.
UPDATE conversations SET closed = 1
 WHERE closed = 0 AND id NOT IN (SELECT MAX(id) FROM conversations WHERE closed = 0 GROUP BY openid);
CREATE UNIQUE INDEX conversations_one_open ON conversations (openid) WHERE closed = 0;

-- A generation's progress is saved every chat.progress_flush_interval, renewing lease_until: with
-- lease_until out of every index, PostgreSQL makes that an in-place (HOT) update instead of a new
-- index entry each time. Recovery reads the few generating rows through the partial index on id.
DROP INDEX answers_generating;
CREATE INDEX answers_generating ON answers (id) WHERE status = 'generating';
