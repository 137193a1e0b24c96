-- The answers a follower is still owed (generating, or not wholly delivered) are found through an
-- index instead of a scan of every answer: a question looks for one, and so does 继续 and the push
-- job. `owed` is that condition as a generated column; the partial index holds only owed answers.
-- (On PostgreSQL the same migration also adds the functions of postgresql/0026_question_calls.sql.)
ALTER TABLE answers ADD COLUMN owed INTEGER
    GENERATED ALWAYS AS (CASE WHEN status = 'generating' OR delivered_upto < length(text) THEN 1 ELSE 0 END) VIRTUAL;
CREATE INDEX answers_still_owed ON answers (openid, id) WHERE owed = 1;
