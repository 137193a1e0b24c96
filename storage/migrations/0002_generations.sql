-- The model side: one row per attempt at a generation (a failover writes one row per channel tried),
-- the follower's chosen model, and channels disabled until the owner re-enables them.
--
-- outcome:
--   ok           the answer arrived in full
--   failed_over  this channel failed before the first token; the next row is the next channel
--   cut          the stream broke off after the first token (the user kept what arrived)
--   refused      the provider's content filter refused the question or the answer
--   timed_out    no first token in time on the last channel tried, or the user's deadline passed
--   failed       any other failure (rejected key, bad request, no channel left)
CREATE TABLE generations (
    id                INTEGER PRIMARY KEY,
    openid            TEXT NOT NULL,
    msg_key           TEXT,
    channel           TEXT NOT NULL,
    model             TEXT NOT NULL,
    started_at        REAL NOT NULL,
    first_token_ms    REAL,
    total_ms          REAL NOT NULL,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    usage_estimated   INTEGER NOT NULL DEFAULT 0,
    outcome           TEXT NOT NULL
                      CHECK (outcome IN ('ok', 'failed_over', 'cut', 'refused', 'timed_out', 'failed')),
    error_kind        TEXT
);
CREATE INDEX generations_started ON generations (started_at);
CREATE INDEX generations_msg ON generations (msg_key) WHERE msg_key IS NOT NULL;

-- NULL: the global default (chat.default_model).
ALTER TABLE users ADD COLUMN model TEXT;

-- A channel whose key was rejected or whose balance ran out stays off, across restarts and for
-- every process, until the owner re-enables it. key_hash ties the row to the key that failed: a
-- changed key in the config is a fresh start.
CREATE TABLE disabled_channels (
    channel     TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    disabled_at REAL NOT NULL
);
