-- Coffer store: ListSecrets in SQL, bounded outbox and attempt history, guarded replica overwrite (issue 8).

-- What the ListSecrets filters match against, one row per term, computed by coffer.core.listing.list_terms
-- (the word splitting is Python's, so it is computed there, not in SQL). kind: 'w' a lower-cased word of the
-- name (field 0), the description (field 1) or a tag key/value (fields 2+); 'k' a tag key, 'v' a tag value,
-- 'o' the lower-cased owning service, each whole. Byte order (COLLATE "C") makes a prefix one index range.
CREATE TABLE store.list_terms (
    secret_id bigint  NOT NULL REFERENCES store.secrets (id) ON DELETE CASCADE,
    kind      "char"  NOT NULL,
    field     integer NOT NULL,
    term      text    COLLATE "C" NOT NULL
);

CREATE INDEX list_terms_by_secret ON store.list_terms (secret_id, kind, field, term);
CREATE INDEX list_terms_by_term ON store.list_terms (kind, term, secret_id, field);

-- Secrets written before this migration have no terms yet: the store fills them in at start (rows created
-- from now on get their terms in the transaction that writes them).
ALTER TABLE store.secrets ADD COLUMN terms_indexed boolean NOT NULL DEFAULT false;
ALTER TABLE store.secrets ALTER COLUMN terms_indexed SET DEFAULT true;
CREATE INDEX secrets_terms_missing ON store.secrets (id) WHERE NOT terms_indexed;

-- Keyset pagination orders: created date (the default) and name; both never change once written, so these
-- indexes cost nothing on PutSecretValue/GetSecretValue (last_changed_at/last_accessed_on are left unindexed
-- for that reason: those two sorts are a top-N sort of the matching rows).
CREATE INDEX secrets_list_created ON store.secrets (created_at, id);
CREATE INDEX secrets_list_name ON store.secrets ((name COLLATE "C"), id);

-- A peer region's force-overwrite may replace a local secret of the same name only when it is a replica of a
-- secret of that peer, or when an operator set this flag on it.
ALTER TABLE store.secrets ADD COLUMN replication_overwritable boolean NOT NULL DEFAULT false;

-- Outbox trimming: rows every peer acknowledged are deleted; this index finds the oldest ones.
CREATE INDEX outbox_by_secret ON store.outbox (secret_id, id);

-- Attempt history trimming: the finished attempts of one secret, newest first.
CREATE INDEX rotation_attempts_finished ON store.rotation_attempts (secret_id, finished_at DESC, id DESC)
    WHERE status IN ('Succeeded', 'Failed', 'Cancelled');
