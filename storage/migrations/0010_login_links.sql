-- Login without anything to guess (issue 13). 登录 in chat answers a one-time link whose token
-- (>= 128 bits) is kept here only as its SHA-256; a desktop browser holds a secret of its own
-- (also kept as a hash) and shows a short code the follower sends back in chat, which logs in that
-- browser only. The six-digit codes and their failure counters go: a guessed short code can only
-- attach someone's waiting browser to the guesser's own account, and nothing is capped for all.
DROP TABLE login_codes;
DROP TABLE login_failures;

CREATE TABLE login_links (
    token_hash BLOB PRIMARY KEY,
    openid     TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL
);
CREATE INDEX login_links_expiry ON login_links (expires_at);

-- A browser waiting for its code to be sent in chat. live = 1 until the browser picks up its session
-- or the wait expires; the short code is unique among live waits only. openid is set by the chat
-- message that claimed it (once: a claimed wait cannot be claimed again).
CREATE TABLE login_waits (
    id          INTEGER PRIMARY KEY,
    secret_hash BLOB NOT NULL UNIQUE,
    code        TEXT NOT NULL,
    live        INTEGER DEFAULT 1 CHECK (live = 1),
    ip          TEXT NOT NULL,
    openid      TEXT,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    claimed_at  REAL,
    used_at     REAL
);
CREATE UNIQUE INDEX login_waits_live_code ON login_waits (code) WHERE live = 1;
CREATE INDEX login_waits_expiry ON login_waits (expires_at);
CREATE INDEX login_waits_ip ON login_waits (ip, created_at);

-- Attempts counted per subject ('login-code:<openid>', 'orders:<openid>') within a window, shared
-- by every process; pruned as they age out. Each subject's count only ever limits that subject.
CREATE TABLE attempts (
    subject TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE INDEX attempts_subject ON attempts (subject, at);
CREATE INDEX attempts_at ON attempts (at);
