-- The owner's commands (issue 7): an audit trail of every change they make, and the products table
-- the owner manages while the server runs.

-- One row per owner change, written in the same transaction as the change where the change is a
-- database one (a WeChat Pay call is recorded by a second row once its answer is known).
--   action  what was done: 'credits.grant', 'users.freeze', 'orders.refund', ...
--   target  what it was done to: an openid, an order number, a product id, a channel name
--   args    the command line as a JSON list, secrets replaced by '***'
--   detail  JSON: what changed (amounts, old and new values, outcomes)
--   actor   the OS user and host that ran the command
-- `admin` ledger rows carry ref 'audit:<id>' of the row that explains them.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    args   TEXT NOT NULL DEFAULT '[]',
    detail TEXT NOT NULL DEFAULT '{}',
    actor  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_target ON audit (target, id);
CREATE INDEX audit_action ON audit (action, id);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;

-- What followers can buy. Seeded from config [[products]] (a product whose id is not here yet is
-- added; one that is here is left as the owner made it), then managed with `mpgpt products`.
-- Orders copy credits and price when they are created, so a change never alters an open order.
CREATE TABLE products (
    id         TEXT PRIMARY KEY
               CHECK (length(id) BETWEEN 1 AND 32 AND id NOT GLOB '*[^0-9A-Za-z_-]*'),
    name       TEXT NOT NULL CHECK (length(trim(name)) BETWEEN 1 AND 127),
    credits    INTEGER NOT NULL CHECK (credits > 0),
    price_fen  INTEGER NOT NULL CHECK (price_fen > 0),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    -- the order products are listed in: config order first, later additions after
    position   INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
