-- The kms's seal in the "shamir" mode: one row holding the root key encrypted (AES-256-GCM) under the unseal
-- key, which exists only in memory and as N shares with threshold K. Neither the root key nor the unseal key
-- is ever stored in plaintext. No row in the "file" mode.

CREATE TABLE kms.seal (
    id             smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    mode           text        NOT NULL CHECK (mode IN ('shamir')),
    -- SLIP-39 identifier of the share set (a share of another set is refused before combining)
    share_set_id   integer     NOT NULL,
    key_shares     integer     NOT NULL CHECK (key_shares BETWEEN 1 AND 16),
    key_threshold  integer     NOT NULL CHECK (key_threshold BETWEEN 1 AND key_shares),
    -- iv (12) || ciphertext || tag (16) of the 32-byte root key under the unseal key
    encrypted_root bytea       NOT NULL,
    root_key_id    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
