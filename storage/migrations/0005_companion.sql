-- The companion page (issue 5): login codes, sessions, failed login attempts, generated secrets.

-- One row per code handed out in chat. A code is live (live = 1) from issue until it is used or
-- expires; then live is NULL. Uniqueness holds over live codes only, so a code can be handed out
-- again once its earlier holder is done with it. Time cannot appear in a partial index, so expiry is
-- made explicit: every issue first retires the codes whose expires_at has passed (in the same
-- transaction), and a redeem also checks expires_at, so an expired code neither blocks a new one nor
-- logs anyone in.
CREATE TABLE login_codes (
    id         INTEGER PRIMARY KEY,
    code       TEXT NOT NULL CHECK (length(code) = 6 AND code NOT GLOB '*[^0-9]*'),
    openid     TEXT NOT NULL,
    live       INTEGER DEFAULT 1 CHECK (live = 1),
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL,
    -- the client address that used it
    used_by    TEXT
);
-- No two live codes are the same; a user has at most one live code (asking again re-sends it).
CREATE UNIQUE INDEX login_codes_live_code ON login_codes (code) WHERE live = 1;
CREATE UNIQUE INDEX login_codes_live_user ON login_codes (openid) WHERE live = 1;
CREATE INDEX login_codes_expiry ON login_codes (expires_at) WHERE live = 1;
CREATE INDEX login_codes_created ON login_codes (created_at);

-- A session is the signed cookie's id; the row lets logout revoke it before it expires.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    openid     TEXT NOT NULL,
    -- 'code' or 'oauth'
    method     TEXT NOT NULL CHECK (method IN ('code', 'oauth')),
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Failed code entries, counted per client address and over all addresses within a window, shared by
-- every server process; pruned as they age out.
CREATE TABLE login_failures (
    ip TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX login_failures_ip ON login_failures (ip, at);
CREATE INDEX login_failures_at ON login_failures (at);

-- Secrets the server generates once and every process shares (the session-signing key when the
-- config gives none).
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- The page lists a user's recent generations.
CREATE INDEX generations_user ON generations (openid, id);
