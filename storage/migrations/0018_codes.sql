-- Redemption codes (issue 18) and two new ledger kinds.
--
-- The ledger gains
--   redeem  +N to balance, ref 'code:<redeem_codes.id>' (one row per code: the code's own
--           conditional UPDATE lets one redemption through, and UNIQUE (openid, kind, ref) too)
--   invite  +N to balance, an invitation reward, ref 'invitee:<openid>' (issue 18's invitations)
-- SQLite cannot alter a CHECK, so the table is rebuilt with every row and id kept; its index and
-- its append-only triggers are made again. (The implicit DELETE of DROP TABLE fires no trigger.)

DROP TRIGGER ledger_no_update;
DROP TRIGGER ledger_no_delete;

CREATE TABLE ledger_new (
    id           INTEGER PRIMARY KEY,
    openid       TEXT NOT NULL REFERENCES accounts (openid),
    kind         TEXT NOT NULL
                 CHECK (kind IN ('trial', 'daily', 'expire', 'reserve', 'settle', 'refund', 'topup', 'admin',
                                 'redeem', 'invite')),
    amount       INTEGER NOT NULL DEFAULT 0,
    daily_amount INTEGER NOT NULL DEFAULT 0,
    ref          TEXT NOT NULL,
    created_at   REAL NOT NULL,
    UNIQUE (openid, kind, ref),
    CHECK (CASE kind
        WHEN 'trial'   THEN amount >= 0 AND daily_amount = 0
        WHEN 'expire'  THEN amount = 0 AND daily_amount < 0
        WHEN 'daily'   THEN amount = 0 AND daily_amount >= 0
        WHEN 'reserve' THEN amount <= 0 AND daily_amount <= 0
        WHEN 'settle'  THEN amount = 0 AND daily_amount = 0
        WHEN 'refund'  THEN amount >= 0 AND daily_amount >= 0
        WHEN 'topup'   THEN amount > 0 AND daily_amount = 0
        WHEN 'admin'   THEN amount != 0 AND daily_amount = 0
        WHEN 'redeem'  THEN amount > 0 AND daily_amount = 0
        WHEN 'invite'  THEN amount > 0 AND daily_amount = 0
    END)
);
INSERT INTO ledger_new (id, openid, kind, amount, daily_amount, ref, created_at)
    SELECT id, openid, kind, amount, daily_amount, ref, created_at FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_account ON ledger (openid, id);

CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;

-- One row per code the owner made. Only a hash of the code is kept (SHA-256 of its normal form:
-- a code carries 100 random bits, so the hash cannot be turned back by trying codes). A code is
-- redeemed by one conditional UPDATE (`WHERE redeemed_by IS NULL AND disabled_at IS NULL AND not
-- expired`): however many followers or processes race for it, one row changes, once.
CREATE TABLE redeem_codes (
    id          INTEGER PRIMARY KEY,
    code_hash   TEXT NOT NULL UNIQUE CHECK (length(code_hash) = 64),
    batch       TEXT NOT NULL CHECK (length(batch) BETWEEN 1 AND 64),
    credits     INTEGER NOT NULL CHECK (credits > 0),
    created_at  REAL NOT NULL,
    expires_at  REAL,
    disabled_at REAL,
    redeemed_by TEXT,
    redeemed_at REAL,
    CHECK ((redeemed_by IS NULL) = (redeemed_at IS NULL))
);
CREATE INDEX redeem_codes_batch ON redeem_codes (batch, id);
CREATE INDEX redeem_codes_by_user ON redeem_codes (redeemed_by) WHERE redeemed_by IS NOT NULL;

-- Wrong codes per follower in the current window. A redemption first takes a slot here with one
-- conditional upsert (refused past the limit) and gives it back when the code was right, so
-- concurrent guesses by one follower cannot get past the limit: the row serialises them.
CREATE TABLE redeem_guard (
    openid       TEXT PRIMARY KEY,
    window_start REAL NOT NULL,
    failures     INTEGER NOT NULL CHECK (failures >= 0)
);
