-- Invitations (issue 18): each follower's invite code, and who invited whom.
--
-- invites has one row per invitee (the primary key: a follower is recorded as invited once). The
-- reward is paid in the transaction that credits the invitee's first paid top-up: the conditional
-- UPDATE of rewarded_at lets one settle through, and the ledger rows ('invite', ref
-- 'invitee:<openid>' for both sides) are unique too, so a repeated notify or the query job racing
-- it pays nothing twice.
CREATE TABLE invite_codes (
    openid     TEXT PRIMARY KEY,
    code       TEXT NOT NULL UNIQUE CHECK (length(code) BETWEEN 6 AND 16),
    created_at REAL NOT NULL
);

CREATE TABLE invites (
    invitee     TEXT PRIMARY KEY,
    inviter     TEXT NOT NULL CHECK (inviter != invitee),
    via         TEXT NOT NULL CHECK (via IN ('wechat', 'page')),
    created_at  REAL NOT NULL,
    rewarded_at REAL
);
CREATE INDEX invites_by_inviter ON invites (inviter);
