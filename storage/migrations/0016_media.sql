-- Pictures and voice (issue 17).
--
-- A picture a follower sent: where WeChat keeps it (PicUrl, MediaId) or, from the web chat, the
-- upload itself (dropped once its answer is final). A picture alone waits for the follower's next
-- text: `taken_by` is the msg_key of the question that took it, set by one conditional UPDATE, so
-- the text and the picture's own default question can never both take it.
CREATE TABLE pictures (
    id           INTEGER PRIMARY KEY,
    openid       TEXT NOT NULL,
    msg_key      TEXT NOT NULL UNIQUE,
    pic_url      TEXT NOT NULL DEFAULT '',
    media_id     TEXT NOT NULL DEFAULT '',
    data         BLOB,
    content_type TEXT,
    created_at   REAL NOT NULL,
    taken_by     TEXT
);
CREATE INDEX pictures_waiting ON pictures (openid, created_at) WHERE taken_by IS NULL;

-- What a voice question was heard as (shown above its answer), and the picture a question is about.
ALTER TABLE answers ADD COLUMN heard TEXT;
ALTER TABLE answers ADD COLUMN picture_id INTEGER;
