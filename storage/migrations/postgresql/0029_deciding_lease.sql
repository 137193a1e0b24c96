-- The lease under which a message's first delivery decides it (see the SQLite 0029): a retry on any
-- host takes the decision over once the lease ran out. Times are the database's clock (db.clock).
ALTER TABLE inbound ADD COLUMN deciding_until DOUBLE PRECISION;
