-- Port of ../0021_answer_pages.sql.
CREATE TABLE answer_pages (
    answer_id  BIGINT PRIMARY KEY REFERENCES answers (id) ON DELETE CASCADE,
    token      TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
ALTER TABLE answers ADD COLUMN labelled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE answers ADD COLUMN markdown TEXT;
