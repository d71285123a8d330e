-- Schema of the kms service: customer-managed and AWS-managed keys, their key-material versions (wrapped under
-- the root key; never plaintext) and aliases. Applied once, inside one transaction, by coffer.kms.keystore.migrate.

CREATE TABLE kms.keys (
    key_id               text        PRIMARY KEY,
    account_id           text        NOT NULL,
    region               text        NOT NULL,
    description          text        NOT NULL DEFAULT '',
    key_manager          text        NOT NULL CHECK (key_manager IN ('CUSTOMER', 'AWS')),
    -- for AWS-managed keys: the service the key belongs to ('secretsmanager'); NULL for customer keys
    managed_service      text,
    key_state            text        NOT NULL,
    origin               text        NOT NULL DEFAULT 'AWS_KMS',
    key_spec             text        NOT NULL DEFAULT 'SYMMETRIC_DEFAULT',
    key_usage            text        NOT NULL DEFAULT 'ENCRYPT_DECRYPT',
    multi_region         boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL,
    deletion_date        timestamptz,
    rotation_enabled     boolean     NOT NULL DEFAULT false,
    rotation_period_days integer     CHECK (rotation_period_days BETWEEN 90 AND 2560),
    next_rotation_at     timestamptz,
    on_demand_rotations  integer     NOT NULL DEFAULT 0 CHECK (on_demand_rotations BETWEEN 0 AND 25),
    tags                 jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- one AWS-managed key per (account, region, service): settles concurrent first uses of the default key
    CONSTRAINT keys_one_aws_managed_per_service UNIQUE (account_id, region, managed_service),
    CONSTRAINT keys_deletion_date_iff_pending CHECK ((key_state = 'PendingDeletion') = (deletion_date IS NOT NULL))
);

CREATE INDEX keys_by_scope ON kms.keys (account_id, region, key_id COLLATE "C");
CREATE INDEX keys_pending_deletion ON kms.keys (deletion_date) WHERE key_state = 'PendingDeletion';
CREATE INDEX keys_rotation_due ON kms.keys (next_rotation_at) WHERE rotation_enabled;

CREATE TABLE kms.key_materials (
    key_id        text        NOT NULL REFERENCES kms.keys (key_id) ON DELETE CASCADE,
    material_id   text        NOT NULL CHECK (material_id ~ '^[0-9a-f]{64}$'),
    -- AES-256-GCM wrap under the root key, AAD = (account, region, key_id, material_id)
    wrapped       bytea       NOT NULL,
    root_key_id   text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('CURRENT', 'NON_CURRENT')),
    -- NULL for the key's original material
    rotation_type text        CHECK (rotation_type IN ('AUTOMATIC', 'ON_DEMAND')),
    rotated_at    timestamptz,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (key_id, material_id)
);

-- exactly one CURRENT version per key (rotation flips it inside one transaction)
CREATE UNIQUE INDEX key_materials_one_current ON kms.key_materials (key_id) WHERE state = 'CURRENT';

CREATE TABLE kms.aliases (
    account_id text        NOT NULL,
    region     text        NOT NULL,
    alias_name text        NOT NULL,
    key_id     text        NOT NULL REFERENCES kms.keys (key_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    -- alias names are unique per account and region, case-sensitive
    PRIMARY KEY (account_id, region, alias_name)
);

CREATE INDEX aliases_by_key ON kms.aliases (key_id);
CREATE INDEX aliases_by_name ON kms.aliases (account_id, region, alias_name COLLATE "C");
