-- Port of ../0022_token_pricing.sql (PostgreSQL alters the ledger's CHECK in place; no rebuild).
ALTER TABLE accounts ADD COLUMN balance_milli BIGINT NOT NULL DEFAULT 0
    CHECK (balance_milli >= 0 AND balance_milli < 1000);
ALTER TABLE accounts ADD COLUMN daily_milli BIGINT NOT NULL DEFAULT 0
    CHECK (daily_milli >= 0 AND daily_milli < 1000);
ALTER TABLE reservations ADD COLUMN spent_milli BIGINT CHECK (spent_milli IS NULL OR spent_milli >= 0);
ALTER TABLE reservations ADD COLUMN estimated BIGINT NOT NULL DEFAULT 0 CHECK (estimated IN (0, 1));
CREATE INDEX reservations_by_user ON reservations (openid, finished_at);

ALTER TABLE ledger ADD COLUMN amount_milli BIGINT NOT NULL DEFAULT 0
    CHECK (amount_milli > -1000 AND amount_milli < 1000);
ALTER TABLE ledger ADD COLUMN daily_milli BIGINT NOT NULL DEFAULT 0
    CHECK (daily_milli > -1000 AND daily_milli < 1000);
ALTER TABLE ledger DROP CONSTRAINT ledger_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_check CHECK (CASE kind
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
END);
ALTER TABLE ledger ADD CONSTRAINT ledger_milli_only_settle_expire
    CHECK (kind IN ('settle', 'expire') OR (amount_milli = 0 AND daily_milli = 0));
