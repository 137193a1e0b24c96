-- Accounts, the append-only credits ledger, reservations, the whitelist and shared rate-limit events.
--
-- Two buckets per account:
--   balance  credits that keep: the trial, top-ups, owner adjustments;
--   daily    today's free credits (Asia/Shanghai day in daily_day); they do not accumulate: the first
--            grant of a new day expires what is left of the old one, then grants the day's amount.
-- A charge takes from `daily` first, then from `balance`.
--
-- Every ledger row carries two signed deltas, `amount` (to balance) and `daily_amount` (to daily).
-- The invariant, checked by `mpgpt doctor` (storage.ledger.Ledger.check_invariant):
--     accounts.balance = SUM(ledger.amount)        for each account
--     accounts.daily   = SUM(ledger.daily_amount)  for each account
-- It holds because every repository method that writes a ledger row changes the account by the same
-- deltas in the same transaction, and ledger rows can never be changed or deleted afterwards.
--
-- Kinds and their rows (ref says what the row belongs to; UNIQUE (openid, kind, ref) makes every
-- state change idempotent: a retried transaction cannot insert its row twice):
--   trial   +N to balance, once per account, ref 'trial' (written with 0 when trials are disabled, so
--           turning them on later does not pay out to old accounts)
--   expire  -leftover daily, ref = the day whose grant expired it
--   daily   +N daily, ref = the day (YYYY-MM-DD)
--   reserve -cost split over both buckets, ref = generation key
--   settle  0, ref = generation key (the reserved credits are spent for good)
--   refund  +what the reserve took, back to the bucket it came from, ref = generation key
--   topup   +N to balance, ref = order number
--   admin   ±N to balance, ref = owner audit id

CREATE TABLE accounts (
    openid     TEXT PRIMARY KEY,
    status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    tier       TEXT NOT NULL DEFAULT 'free',
    balance    INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    daily      INTEGER NOT NULL DEFAULT 0 CHECK (daily >= 0),
    daily_day  TEXT,
    created_at REAL NOT NULL
);

CREATE TABLE ledger (
    id           INTEGER PRIMARY KEY,
    openid       TEXT NOT NULL REFERENCES accounts (openid),
    kind         TEXT NOT NULL
                 CHECK (kind IN ('trial', 'daily', 'expire', 'reserve', 'settle', 'refund', 'topup', 'admin')),
    amount       INTEGER NOT NULL DEFAULT 0,
    daily_amount INTEGER NOT NULL DEFAULT 0,
    ref          TEXT NOT NULL,
    created_at   REAL NOT NULL,
    UNIQUE (openid, kind, ref),
    -- The signs each kind may carry: a bug that writes a wrong row fails here, not in the doctor.
    CHECK (CASE kind
        WHEN 'trial'   THEN amount >= 0 AND daily_amount = 0
        WHEN 'expire'  THEN amount = 0 AND daily_amount < 0
        WHEN 'daily'   THEN amount = 0 AND daily_amount >= 0
        WHEN 'reserve' THEN amount <= 0 AND daily_amount <= 0
        WHEN 'settle'  THEN amount = 0 AND daily_amount = 0
        WHEN 'refund'  THEN amount >= 0 AND daily_amount >= 0
        WHEN 'topup'   THEN amount > 0 AND daily_amount = 0
        WHEN 'admin'   THEN amount != 0 AND daily_amount = 0
    END)
);
CREATE INDEX ledger_account ON ledger (openid, id);

-- Append-only, enforced by the database itself.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;

-- One row per charged generation. State moves reserved -> settled | refunded exactly once; the
-- move is guarded in SQL (WHERE state = 'reserved'), so a retry or a second process is a no-op.
CREATE TABLE reservations (
    gen_key     TEXT PRIMARY KEY,
    openid      TEXT NOT NULL REFERENCES accounts (openid),
    amount      INTEGER NOT NULL CHECK (amount >= 0),
    -- how much of `amount` came from the daily bucket (a refund puts it back there)
    from_daily  INTEGER NOT NULL DEFAULT 0 CHECK (from_daily >= 0 AND from_daily <= amount),
    state       TEXT NOT NULL DEFAULT 'reserved' CHECK (state IN ('reserved', 'settled', 'refunded')),
    created_at  REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX reservations_open ON reservations (created_at) WHERE state = 'reserved';

-- Users who skip the rate limit and credits (owner-managed).
CREATE TABLE whitelist (
    openid   TEXT PRIMARY KEY,
    note     TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL
);

-- Questions counted by the rate limit; shared by every process, pruned as they age out.
CREATE TABLE rate_events (
    openid TEXT NOT NULL,
    at     REAL NOT NULL
);
CREATE INDEX rate_events_user ON rate_events (openid, at);
CREATE INDEX rate_events_at ON rate_events (at);
