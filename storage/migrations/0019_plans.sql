-- Membership plans (issue 18): a product may grant a tier for some days instead of (or besides)
-- credits. Orders and products carry the plan (copied at creation, like credits and price), and a
-- plan-only product has 0 credits, so the two tables are rebuilt with their CHECKs relaxed to
-- "credits or a plan". refunds references orders: it is rebuilt beside it (pointing at the new
-- table, which keeps the name through the rename), so no foreign key ever dangles.

CREATE TABLE orders_new (
    out_trade_no   TEXT PRIMARY KEY
                   CHECK (length(out_trade_no) BETWEEN 6 AND 32 AND out_trade_no NOT GLOB '*[^0-9A-Za-z_|*-]*'),
    openid         TEXT NOT NULL,
    product_id     TEXT NOT NULL,
    credits        INTEGER NOT NULL CHECK (credits >= 0),
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    kind           TEXT NOT NULL CHECK (kind IN ('native', 'jsapi')),
    state          TEXT NOT NULL DEFAULT 'creating'
                   CHECK (state IN ('creating', 'pending', 'paid', 'closed', 'failed', 'held', 'refunding', 'refunded')),
    reusable       INTEGER CHECK (reusable = 1),
    code_url       TEXT,
    prepay_id      TEXT,
    created_at     REAL NOT NULL,
    expires_at     REAL NOT NULL,
    paid_at        REAL,
    closed_at      REAL,
    transaction_id TEXT,
    claimed_until  REAL,
    flagged        INTEGER NOT NULL DEFAULT 0,
    note           TEXT,
    -- the plan this order grants when paid ('' and 0: none)
    plan_tier      TEXT NOT NULL DEFAULT '',
    plan_days      INTEGER NOT NULL DEFAULT 0 CHECK (plan_days >= 0),
    CHECK ((plan_tier = '') = (plan_days = 0)),
    CHECK (credits > 0 OR plan_days > 0)
);
INSERT INTO orders_new (out_trade_no, openid, product_id, credits, amount_fen, kind, state, reusable, code_url,
                        prepay_id, created_at, expires_at, paid_at, closed_at, transaction_id, claimed_until,
                        flagged, note)
    SELECT out_trade_no, openid, product_id, credits, amount_fen, kind, state, reusable, code_url, prepay_id,
           created_at, expires_at, paid_at, closed_at, transaction_id, claimed_until, flagged, note FROM orders;

CREATE TABLE refunds_new (
    out_refund_no  TEXT PRIMARY KEY
                   CHECK (length(out_refund_no) BETWEEN 1 AND 64 AND out_refund_no NOT GLOB '*[^0-9A-Za-z_|*@-]*'),
    out_trade_no   TEXT NOT NULL UNIQUE REFERENCES orders_new (out_trade_no),
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    reason         TEXT,
    state          TEXT NOT NULL DEFAULT 'requested'
                   CHECK (state IN ('requested', 'processing', 'success', 'closed', 'abnormal')),
    refund_id      TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
INSERT INTO refunds_new SELECT out_refund_no, out_trade_no, amount_fen, reason, state, refund_id, created_at,
                               updated_at FROM refunds;
DROP TABLE refunds;
DROP TABLE orders;
-- renaming rewrites refunds_new's reference to the new name
ALTER TABLE orders_new RENAME TO orders;
ALTER TABLE refunds_new RENAME TO refunds;
CREATE UNIQUE INDEX orders_one_reusable ON orders (openid, product_id) WHERE reusable = 1;
CREATE INDEX orders_open ON orders (state, created_at) WHERE state IN ('creating', 'pending');
CREATE INDEX orders_by_user ON orders (openid, created_at);
CREATE INDEX orders_flagged ON orders (flagged) WHERE flagged = 1;

CREATE TABLE products_new (
    id         TEXT PRIMARY KEY
               CHECK (length(id) BETWEEN 1 AND 32 AND id NOT GLOB '*[^0-9A-Za-z_-]*'),
    name       TEXT NOT NULL CHECK (length(trim(name)) BETWEEN 1 AND 127),
    credits    INTEGER NOT NULL CHECK (credits >= 0),
    price_fen  INTEGER NOT NULL CHECK (price_fen > 0),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    position   INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    tier       TEXT NOT NULL DEFAULT '',
    days       INTEGER NOT NULL DEFAULT 0 CHECK (days >= 0),
    CHECK ((tier = '') = (days = 0)),
    CHECK (credits > 0 OR days > 0)
);
INSERT INTO products_new (id, name, credits, price_fen, enabled, position, created_at, updated_at)
    SELECT id, name, credits, price_fen, enabled, position, created_at, updated_at FROM products;
DROP TABLE products;
ALTER TABLE products_new RENAME TO products;

-- A follower's plan: the tier they hold until ends_at. The rule reads ends_at at every question,
-- so expiry needs no job: past it the follower is back on their own tier (accounts.tier, 'free').
-- One row per follower; buying the same tier again extends it from its current end, another
-- tier replaces it from now (both decided inside one upsert).
CREATE TABLE plans (
    openid     TEXT PRIMARY KEY,
    tier       TEXT NOT NULL CHECK (tier != ''),
    ends_at    REAL NOT NULL,
    updated_at REAL NOT NULL
);

-- One row per order that granted a plan: the grant happens once (the primary key), and a refund
-- takes back exactly what it granted (revoked_at, once).
CREATE TABLE plan_grants (
    ref        TEXT PRIMARY KEY,
    openid     TEXT NOT NULL,
    tier       TEXT NOT NULL,
    days       INTEGER NOT NULL CHECK (days > 0),
    granted_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX plan_grants_by_user ON plan_grants (openid);
