-- Answer pages (issue 15): `{server.public_url}/a/<token>` shows one answer, live, without login.
--
-- One page per answer: the token is random (192 bits, URL-safe), so knowing it is the capability;
-- every process that needs the link for an answer reads the same row (INSERT ... ON CONFLICT DO
-- NOTHING, then SELECT). It expires with storage.retention_days and goes with its answer.
CREATE TABLE answer_pages (
    answer_id  INTEGER PRIMARY KEY REFERENCES answers (id) ON DELETE CASCADE,
    token      TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);

-- The answer's AI-content label was given in chat (once per answer, whichever reply or push).
ALTER TABLE answers ADD COLUMN labelled INTEGER NOT NULL DEFAULT 0;

-- The model's text as written (markdown, checked like `text`), for the answer page to render; NULL
-- when `text` is that already (web chat answers) or it is not known (an answer closed by recovery).
ALTER TABLE answers ADD COLUMN markdown TEXT;
