-- Several hosts on one database (issue 14): what SQLite's single writer used to guarantee is now
-- said by the schema, so it holds on PostgreSQL too.
--
-- A follower has at most one open conversation: two hosts opening one at once cannot both succeed.
-- Older duplicates (none are expected) are closed first, the latest stays open.
UPDATE conversations SET closed = 1
 WHERE closed = 0 AND id NOT IN (SELECT MAX(id) FROM conversations WHERE closed = 0 GROUP BY openid);
CREATE UNIQUE INDEX conversations_one_open ON conversations (openid) WHERE closed = 0;
