-- Coffer store: cross-region replication (issue 4).
--
-- The primary's view of each replica lives in store.replication_status (one row per (secret, region)).
-- Every change of a replicated secret writes an outbox row whose payload carries a metadata snapshot (never
-- a value); the replicator ships those rows, in outbox order, to each peer region and remembers how far it
-- got per peer in store.replication_peers.

ALTER TABLE store.replication_status
    -- The secret's change sequence of the change that (re)added this region: shipping starts there, and
    -- that change carries every version (the seed).
    ADD COLUMN since_seq        bigint      NOT NULL DEFAULT 0,
    -- The highest change sequence the region acknowledged (InSync when it reaches secrets.change_seq).
    ADD COLUMN synced_seq       bigint      NOT NULL DEFAULT 0,
    ADD COLUMN force_overwrite  boolean     NOT NULL DEFAULT false,
    -- The region refused the replica (name clash, unknown key, no longer a replica): stop shipping until
    -- ReplicateSecretToRegions adds the region again.
    ADD COLUMN blocked          boolean     NOT NULL DEFAULT false;

CREATE INDEX replication_status_by_region ON store.replication_status (region);

-- Per peer region: the last outbox id shipped and acknowledged.
CREATE TABLE store.replication_peers (
    region      text        PRIMARY KEY,
    last_outbox bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Wall-clock insertion time of an outbox row (the replication-lag metric starts here; created_at follows the
-- application's clock, which tests move).
ALTER TABLE store.outbox ADD COLUMN committed_at timestamptz NOT NULL DEFAULT clock_timestamp();
