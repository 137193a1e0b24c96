-- A message's first delivery decides it (its reply, or the answer its reply comes from) under a lease
-- it renews while deciding takes long (a voice being heard, a picture waiting for its text). A
-- process that dies deciding leaves the lease to run out, and a retry of the message on any process
-- takes the decision over instead of ending with the "still thinking" hint and losing the question.
-- NULL: nothing to decide (the reply was known at once), or a row from before this migration.
ALTER TABLE inbound ADD COLUMN deciding_until REAL;
