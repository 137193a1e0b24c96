-- The WeChat chat path: users, inbound messages, conversations, answers, the access_token.

CREATE TABLE users (
    openid          TEXT PRIMARY KEY,
    first_seen      REAL NOT NULL,
    last_seen       REAL NOT NULL,
    subscribed      INTEGER NOT NULL DEFAULT 0,
    subscribed_at   REAL,
    unsubscribed_at REAL
);

-- One row per WeChat message (MsgId) or event (FromUserName + CreateTime + Event).
-- `reply` is decided once; WeChat's retries of the same message get the same reply.
CREATE TABLE inbound (
    msg_key     TEXT PRIMARY KEY,
    openid      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    received_at REAL NOT NULL,
    deliveries  INTEGER NOT NULL DEFAULT 1,
    -- the answer this message's reply is about: its own question's, or an owed one it fetches
    answer_id   INTEGER,
    -- a line added under the reply (e.g. "your new question has started")
    note        TEXT,
    reply       TEXT,
    replied_at  REAL
);
CREATE INDEX inbound_received ON inbound (received_at);

CREATE TABLE conversations (
    id         INTEGER PRIMARY KEY,
    openid     TEXT NOT NULL REFERENCES users (openid),
    started_at REAL NOT NULL,
    last_at    REAL NOT NULL,
    closed     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX conversations_open ON conversations (openid, closed);

CREATE TABLE turns (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content         TEXT NOT NULL,
    created_at      REAL NOT NULL
);
CREATE INDEX turns_conversation ON turns (conversation_id, id);

-- One generation per question: msg_key is UNIQUE, so whichever delivery or process inserts first
-- owns the generation and every other one waits for it.
CREATE TABLE answers (
    id              INTEGER PRIMARY KEY,
    openid          TEXT NOT NULL REFERENCES users (openid),
    msg_key         TEXT NOT NULL UNIQUE,
    conversation_id INTEGER REFERENCES conversations (id),
    question        TEXT NOT NULL,
    model           TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'generating'
                    CHECK (status IN ('generating', 'done', 'failed', 'timed_out', 'cut')),
    text            TEXT NOT NULL DEFAULT '',
    -- how many characters of `text` the user has been given so far
    delivered_upto  INTEGER NOT NULL DEFAULT 0,
    -- the question's own deliveries are over with part of the answer still owed: the user's next
    -- message (or 继续) fetches it
    awaiting_fetch  INTEGER NOT NULL DEFAULT 0,
    -- 'reply': passive replies only; 'push': customer-service messages, then fetch;
    -- 'web': streamed to the companion page's chat (never owed to WeChat)
    route           TEXT NOT NULL DEFAULT 'reply' CHECK (route IN ('reply', 'push', 'web')),
    lease_owner     TEXT,
    lease_until     REAL,
    created_at      REAL NOT NULL,
    deadline_at     REAL NOT NULL,
    first_token_at  REAL,
    finished_at     REAL,
    attempts        INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX answers_owed ON answers (openid, id) WHERE awaiting_fetch = 1;
CREATE INDEX answers_generating ON answers (lease_until) WHERE status = 'generating';

-- Shared by every process: /cgi-bin/token style refreshes would knock each other out.
CREATE TABLE wechat_tokens (
    app_id       TEXT PRIMARY KEY,
    access_token TEXT NOT NULL,
    expires_at   REAL NOT NULL,
    fetched_at   REAL NOT NULL
);
