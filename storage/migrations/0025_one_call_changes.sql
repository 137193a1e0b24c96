-- Nothing changes on SQLite: on PostgreSQL this migration adds functions that make a state change of
-- several steps one call (see postgresql/0025_one_call_changes.sql). The number is kept on both
-- engines so that a database's version means the same schema on either.
SELECT 1;
