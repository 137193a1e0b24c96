-- Token pricing (issue 18): answers charged from the provider's usage, to the milli-credit.
--
-- Whole credits stay where they were (accounts.balance/daily, ledger.amount/daily_amount), so every
-- fixed-cost answer, grant, top-up, code, plan and invitation is unchanged. The sub-credit part of
-- each bucket is a column of its own, in milli-credits, always 0..999 (the row that would take it
-- to 1000 or more carries the whole credit into the whole column instead):
--     value of balance = balance + balance_milli / 1000,  of daily = daily + daily_milli / 1000
-- and the invariant grows two sums that hold the same way (every row moves the account by its deltas
-- in the same transaction):
--     accounts.balance_milli = SUM(ledger.amount_milli)   accounts.daily_milli = SUM(ledger.daily_milli)
--
-- A token-priced answer writes one `reserve` (whole credits: an upper bound) and one `settle`; the
-- settle row gives back what was reserved but not spent, to the buckets it came from (it was always
-- 0 for fixed-cost answers, and still is). So reserve + settle = -(the answer's price), exactly.
-- `expire` takes a day's leftover milli-credits too. Other kinds carry no milli-credits.

ALTER TABLE accounts ADD COLUMN balance_milli INTEGER NOT NULL DEFAULT 0
    CHECK (balance_milli >= 0 AND balance_milli < 1000);
ALTER TABLE accounts ADD COLUMN daily_milli INTEGER NOT NULL DEFAULT 0
    CHECK (daily_milli >= 0 AND daily_milli < 1000);

-- What the answer was charged, in milli-credits (NULL: all of `amount`, a fixed-cost answer or one
-- refunded), and whether its usage was our estimate (the provider reported none).
ALTER TABLE reservations ADD COLUMN spent_milli INTEGER CHECK (spent_milli IS NULL OR spent_milli >= 0);
ALTER TABLE reservations ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1));
-- 余额 and the page list a follower's latest answers with their cost.
CREATE INDEX reservations_by_user ON reservations (openid, finished_at);

-- SQLite cannot alter a CHECK: the ledger is rebuilt with every row and id kept (as in 0018).
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
    amount_milli INTEGER NOT NULL DEFAULT 0 CHECK (amount_milli > -1000 AND amount_milli < 1000),
    daily_milli  INTEGER NOT NULL DEFAULT 0 CHECK (daily_milli > -1000 AND daily_milli < 1000),
    UNIQUE (openid, kind, ref),
    CHECK (CASE kind
        WHEN 'trial'   THEN amount >= 0 AND daily_amount = 0
        WHEN 'expire'  THEN amount = 0 AND amount_milli = 0 AND daily_amount <= 0 AND daily_milli <= 0
                            AND daily_amount * 1000 + daily_milli < 0
        WHEN 'daily'   THEN amount = 0 AND daily_amount >= 0
        WHEN 'reserve' THEN amount <= 0 AND daily_amount <= 0
        WHEN 'settle'  THEN amount * 1000 + amount_milli >= 0 AND daily_amount * 1000 + daily_milli >= 0
        WHEN 'refund'  THEN amount >= 0 AND daily_amount >= 0
        WHEN 'topup'   THEN amount > 0 AND daily_amount = 0
        WHEN 'admin'   THEN amount != 0 AND daily_amount = 0
        WHEN 'redeem'  THEN amount > 0 AND daily_amount = 0
        WHEN 'invite'  THEN amount > 0 AND daily_amount = 0
    END),
    CHECK (kind IN ('settle', 'expire') OR (amount_milli = 0 AND daily_milli = 0))
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
