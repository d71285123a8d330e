-- Coffer store: the audit trail (issue 9). One CloudTrail-shaped event per public call, hash-chained
-- (coffer.crypto.audit_chain): hash = SHA-256("coffer-audit-v1\0" || prev_hash || seq (8 bytes BE) || record),
-- over the STORED record text (never re-serialised). seq is assigned under the row lock of audit_head in the
-- inserting transaction (never from a sequence: a rolled-back value would leave a gap that reads as a
-- deletion). The other columns are indexed copies of the LookupEvents attributes.

CREATE TABLE store.audit_events (
    seq             bigint      PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    event_time      timestamptz NOT NULL,
    account_id      text        NOT NULL,
    event_name      text        NOT NULL,
    event_source    text        NOT NULL,
    user_name       text        NOT NULL DEFAULT '',
    principal_arn   text        NOT NULL DEFAULT '',
    access_key_id   text        NOT NULL DEFAULT '',
    resource_names  text[]      NOT NULL DEFAULT '{}',
    resource_types  text[]      NOT NULL DEFAULT '{}',
    read_only       boolean     NOT NULL,
    error_code      text,
    record          text        NOT NULL,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL
);

CREATE INDEX audit_events_account_seq ON store.audit_events (account_id, seq DESC);
CREATE INDEX audit_events_account_time ON store.audit_events (account_id, event_time DESC);
CREATE INDEX audit_events_event_name ON store.audit_events (account_id, event_name, seq DESC);
CREATE INDEX audit_events_user_name ON store.audit_events (account_id, user_name, seq DESC);
CREATE INDEX audit_events_access_key ON store.audit_events (account_id, access_key_id, seq DESC);
CREATE INDEX audit_events_event_source ON store.audit_events (account_id, event_source, seq DESC);
CREATE INDEX audit_events_resource_names ON store.audit_events USING gin (resource_names);
CREATE INDEX audit_events_resource_types ON store.audit_events USING gin (resource_types);

-- The chain's head: one row, locked FOR UPDATE by every writer (and by the digest sealer).
CREATE TABLE store.audit_head (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq       bigint  NOT NULL,
    hash      bytea   NOT NULL
);
INSERT INTO store.audit_head (id, seq, hash) VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);

-- Signed digests: each seals the events first_seq..last_seq (none when last_seq = first_seq - 1).
CREATE TABLE store.audit_digests (
    digest_no   bigint      PRIMARY KEY,
    first_seq   bigint      NOT NULL,
    last_seq    bigint      NOT NULL,
    body        text        NOT NULL,
    signature   bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
