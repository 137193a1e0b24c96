-- Port of ../0024_several_hosts.sql (a fresh PostgreSQL database has no duplicates to close).
CREATE UNIQUE INDEX conversations_one_open ON conversations (openid) WHERE closed = 0;

-- lease_until out of every index (see ../0024_several_hosts.sql), and room on each page for the new
-- row versions of saved progress (HOT updates need free space on the same page).
DROP INDEX answers_generating;
CREATE INDEX answers_generating ON answers (id) WHERE status = 'generating';
ALTER TABLE answers SET (fillfactor = 70);
