-- Followers' own API keys move from Fernet under SHA-256(key_secret) to AES-256-GCM under an HKDF key
-- with the openid as associated data (issue 13): a ciphertext copied to another follower's row no
-- longer decrypts. Existing rows are scheme 1; the server re-encrypts them at start-up (it holds
-- chat.key_secret, which SQL does not), one conditional UPDATE per row, so two processes agree.
ALTER TABLE own_keys ADD COLUMN scheme INTEGER NOT NULL DEFAULT 1 CHECK (scheme IN (1, 2));
