-- Coffer store: secrets, versions, staging labels, replication status and the transactional outbox.
-- Values are never stored in plaintext: each version holds an AES-256-GCM ciphertext (crypto/envelope.py)
-- and the KMS-wrapped data key that opens it.

CREATE TABLE store.secrets (
    id                  bigserial PRIMARY KEY,
    arn                 text        NOT NULL UNIQUE,
    -- Unique among live and pending-deletion secrets (a purged secret's row is gone).
    name                text        NOT NULL UNIQUE,
    region              text        NOT NULL,
    -- Replication (later issue): the primary region of a replicated secret, NULL otherwise.
    primary_region      text,
    is_replica          boolean     NOT NULL DEFAULT false,
    type                text,
    description         text,
    -- The key as the caller named it (id, key ARN, alias name or alias ARN); NULL = aws/secretsmanager.
    kms_key_id          text,
    -- The key ARN it resolved to when it was set (informational).
    kms_key_arn         text,
    owning_service      text,
    -- NULL = never tagged; [] after every tag was removed. JSON list of {"Key": .., "Value": ..}.
    tags                jsonb,
    resource_policy     text,
    created_at          timestamptz NOT NULL,
    last_changed_at     timestamptz NOT NULL,
    last_accessed_on    date,
    -- Scheduled for deletion: when DeleteSecret was called, and when the purge may happen.
    deleted_at          timestamptz,
    deletion_date       timestamptz,
    -- Rotation (later issue). rotation_enabled NULL = never configured.
    rotation_enabled    boolean,
    rotation_lambda_arn text,
    rotation_rotator    text,
    rotation_rules      jsonb,
    last_rotated_at     timestamptz,
    next_rotation_at    timestamptz,
    -- Bumped by every committed change; carried by the outbox rows.
    change_seq          bigint      NOT NULL DEFAULT 0,
    CHECK ((deleted_at IS NULL) = (deletion_date IS NULL))
);

CREATE INDEX secrets_deletion_due ON store.secrets (deletion_date) WHERE deletion_date IS NOT NULL;
CREATE INDEX secrets_rotation_due ON store.secrets (next_rotation_at) WHERE rotation_enabled;

CREATE TABLE store.versions (
    secret_id        bigint      NOT NULL REFERENCES store.secrets (id) ON DELETE CASCADE,
    version_id       text        NOT NULL,
    -- Creation order (ties of created_at keep insertion order: "oldest first" listings).
    ordinal          bigserial,
    created_at       timestamptz NOT NULL,
    last_accessed_on date,
    -- 'string' | 'binary'; NULL for the valueless rotation placeholder.
    value_kind       text CHECK (value_kind IN ('string', 'binary')),
    -- 0x01 || nonce || AES-256-GCM(value) || tag, bound to (ARN, version id, kind).
    ciphertext       bytea,
    -- The data key wrapped by KMS under the encryption context {SecretARN, SecretVersionId}.
    wrapped_key      bytea,
    -- ARN of the KMS key that wrapped the data key, and whether it was the default key.
    kms_key_arn      text,
    default_key      boolean     NOT NULL DEFAULT true,
    PRIMARY KEY (secret_id, version_id),
    CHECK ((value_kind IS NULL) = (ciphertext IS NULL) AND (ciphertext IS NULL) = (wrapped_key IS NULL))
);

CREATE TABLE store.labels (
    secret_id  bigint NOT NULL,
    label      text   NOT NULL,
    version_id text   NOT NULL,
    PRIMARY KEY (secret_id, label),
    FOREIGN KEY (secret_id, version_id) REFERENCES store.versions (secret_id, version_id) ON DELETE CASCADE
);

CREATE INDEX labels_by_version ON store.labels (secret_id, version_id);

-- Replication status per replica region (later issue; the primary's view).
CREATE TABLE store.replication_status (
    secret_id        bigint      NOT NULL REFERENCES store.secrets (id) ON DELETE CASCADE,
    region           text        NOT NULL,
    kms_key_id       text,
    status           text        NOT NULL CHECK (status IN ('InSync', 'InProgress', 'Failed')),
    status_message   text,
    last_accessed_on date,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (secret_id, region)
);

-- Transactional outbox: one row per committed change, written in the same transaction. Never a value:
-- only identifiers, labels and metadata. Rows outlive a purged secret (no foreign key).
CREATE TABLE store.outbox (
    id           bigserial   PRIMARY KEY,
    secret_id    bigint      NOT NULL,
    secret_arn   text        NOT NULL,
    change_seq   bigint      NOT NULL,
    event        text        NOT NULL,
    version_id   text,
    payload      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL,
    processed_at timestamptz
);

CREATE INDEX outbox_unprocessed ON store.outbox (id) WHERE processed_at IS NULL;
