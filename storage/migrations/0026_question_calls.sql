-- Nothing changes on SQLite: on PostgreSQL this migration adds the functions that open an account,
-- create an answer and store a reply in one call each (see postgresql/0026_question_calls.sql). The
-- number is kept on both engines so that a database's version means the same schema on either.
SELECT 1;
