-- Port of ../0024_several_hosts.sql (a fresh PostgreSQL database has no duplicates to close).
CREATE UNIQUE INDEX conversations_one_open ON conversations (openid) WHERE closed = 0;
