-- Root key rotation and seal migration (coffer operator rotate-root / migrate-seal), and the pkcs11 seal.
-- Every key-material row already records the root key that wraps it (key_materials.root_key_id: the root's
-- generation); while a rotation runs both roots are usable and rows move from the old to the new in batches.

-- The pkcs11 seal: which key object in the HSM token is the current root (its CKA_ID, as "hsm-<hex>"). The key
-- itself never leaves the HSM. No row in the other modes.
CREATE TABLE kms.hsm_root (
    id          smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    key_label   text        NOT NULL,
    root_key_id text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The rotation or migration under way (at most one). Written before any row is wrapped under the new root and
-- deleted in the transaction that makes the new root the deployment's root; a kms that starts with a row here
-- resumes the rotation.
CREATE TABLE kms.root_rotation (
    id                 smallint    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    from_mode          text        NOT NULL CHECK (from_mode IN ('file', 'shamir', 'pkcs11')),
    to_mode            text        NOT NULL CHECK (to_mode IN ('file', 'shamir', 'pkcs11')),
    old_root_key_id    text        NOT NULL,
    new_root_key_id    text        NOT NULL CHECK (new_root_key_id <> old_root_key_id),
    -- to_mode shamir: the new root key encrypted under the unseal key (iv || ciphertext || tag), and for a
    -- migration from file the share set made for it
    new_encrypted_root bytea,
    share_set_id       integer,
    key_shares         integer,
    key_threshold      integer,
    rewrapped          bigint      NOT NULL DEFAULT 0,
    started_at         timestamptz NOT NULL DEFAULT now()
);


CREATE INDEX key_materials_by_root ON kms.key_materials (root_key_id);
