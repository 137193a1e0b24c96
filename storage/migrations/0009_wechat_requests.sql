-- Signed plaintext /wechat requests seen lately (issue 13). In plaintext mode the URL signature
-- covers token, timestamp and nonce but not the body, so a logged URL could carry any body for the
-- tolerance window. Each (timestamp, nonce) is remembered with a digest of its body until its
-- timestamp goes stale: WeChat's retry (same pair, same body) passes, another body is refused.
-- In storage, so every server process knows the pairs any of them saw.
CREATE TABLE wechat_requests (
    timestamp  TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    digest     BLOB NOT NULL,
    -- when the timestamp goes stale (the row is of no use after that)
    expires_at REAL NOT NULL,
    PRIMARY KEY (timestamp, nonce)
);
CREATE INDEX wechat_requests_expiry ON wechat_requests (expires_at);
