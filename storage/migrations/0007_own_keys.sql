-- A follower's own OpenAI-compatible API key (chat.allow_own_keys), encrypted with the server's
-- chat.key_secret: the database alone does not give the key away.
CREATE TABLE own_keys (
    openid     TEXT PRIMARY KEY REFERENCES users (openid),
    ciphertext BLOB NOT NULL,
    set_at     REAL NOT NULL
);
