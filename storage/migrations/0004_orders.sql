-- WeChat Pay top-ups (issue 5): orders, every verified notify / query outcome, refunds.

-- One row per WeChat Pay order. The amount and credits are fixed here at creation.
-- state: creating (row written, create API not yet answered) → pending (code_url / prepay_id known)
--        → paid | closed | failed; held = WeChat reported a payment we will not credit on our own
--        (amount mismatch), left for the owner; paid → refunding → refunded.
CREATE TABLE orders (
    out_trade_no   TEXT PRIMARY KEY
                   CHECK (length(out_trade_no) BETWEEN 6 AND 32 AND out_trade_no NOT GLOB '*[^0-9A-Za-z_|*-]*'),
    openid         TEXT NOT NULL,
    product_id     TEXT NOT NULL,
    credits        INTEGER NOT NULL CHECK (credits > 0),
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    kind           TEXT NOT NULL CHECK (kind IN ('native', 'jsapi')),
    state          TEXT NOT NULL DEFAULT 'creating'
                   CHECK (state IN ('creating', 'pending', 'paid', 'closed', 'failed', 'held', 'refunding', 'refunded')),
    -- 1 while this is the order handed out again for (openid, product_id); NULL once superseded or settled.
    reusable       INTEGER CHECK (reusable = 1),
    code_url       TEXT,
    prepay_id      TEXT,
    created_at     REAL NOT NULL,
    expires_at     REAL NOT NULL,
    paid_at        REAL,
    closed_at      REAL,
    transaction_id TEXT,
    -- The query and close jobs claim an order by moving this forward with one conditional UPDATE,
    -- so two server processes never work on the same order at once.
    claimed_until  REAL,
    -- Something the owner should look at (a payment after close, an amount mismatch).
    flagged        INTEGER NOT NULL DEFAULT 0,
    note           TEXT
);
CREATE UNIQUE INDEX orders_one_reusable ON orders (openid, product_id) WHERE reusable = 1;
CREATE INDEX orders_open ON orders (state, created_at) WHERE state IN ('creating', 'pending');
CREATE INDEX orders_by_user ON orders (openid, created_at);
CREATE INDEX orders_flagged ON orders (flagged) WHERE flagged = 1;

-- Every outcome of a verified notify, a query, a close or a create, append-only.
CREATE TABLE pay_events (
    id             INTEGER PRIMARY KEY,
    out_trade_no   TEXT NOT NULL,
    source         TEXT NOT NULL CHECK (source IN ('create', 'notify', 'query', 'close', 'refund')),
    outcome        TEXT NOT NULL,
    trade_state    TEXT,
    transaction_id TEXT,
    amount_fen     INTEGER,
    flagged        INTEGER NOT NULL DEFAULT 0,
    note           TEXT,
    created_at     REAL NOT NULL
);
CREATE INDEX pay_events_order ON pay_events (out_trade_no, id);
CREATE INDEX pay_events_flagged ON pay_events (id) WHERE flagged = 1;

-- Full refunds, one per order; a failed request is retried with the same out_refund_no.
CREATE TABLE refunds (
    out_refund_no  TEXT PRIMARY KEY
                   CHECK (length(out_refund_no) BETWEEN 1 AND 64 AND out_refund_no NOT GLOB '*[^0-9A-Za-z_|*@-]*'),
    out_trade_no   TEXT NOT NULL UNIQUE REFERENCES orders (out_trade_no),
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    reason         TEXT,
    state          TEXT NOT NULL DEFAULT 'requested'
                   CHECK (state IN ('requested', 'processing', 'success', 'closed', 'abnormal')),
    refund_id      TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
