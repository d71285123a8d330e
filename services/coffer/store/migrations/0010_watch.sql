-- Coffer store: the change stream of WatchSecrets (issue 14).
--
-- One row per change of a secret, written in the transaction that makes the change, by
-- store.append_secret_event. That function takes a transaction-level advisory lock before the row gets its
-- position, and the lock is held until the transaction ends: positions are therefore given out in commit
-- order, and a reader that saw position P never later finds a committed row below P (the stream resumes
-- "after P" without gaps). Never a value: identifiers, labels, a kind and a short detail.

CREATE TABLE store.secret_events (
    position       bigserial   PRIMARY KEY,
    secret_id      bigint      NOT NULL,
    account_id     text        NOT NULL,
    arn            text        NOT NULL,
    name           text        NOT NULL,
    kind           text        NOT NULL,
    version_id     text,
    version_stages text[]      NOT NULL DEFAULT '{}',
    detail         text,
    event_time     timestamptz NOT NULL,
    -- Wall clock (retention by age; event_time follows the application's clock, which tests move).
    committed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- What the stream keeps: a resume token at or after trimmed_through resumes; one before it (events after
-- it were trimmed) is refused. epoch tells this database's tokens from another's (a restore, a new
-- deployment): a token of another epoch is refused the same way.
CREATE TABLE store.secret_events_state (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch           bigint      NOT NULL,
    trimmed_through bigint      NOT NULL DEFAULT 0
);

INSERT INTO store.secret_events_state (epoch)
VALUES ((floor(random() * 9007199254740991))::bigint);

CREATE FUNCTION store.append_secret_event(
    p_secret_id bigint, p_account_id text, p_arn text, p_name text, p_kind text, p_version_id text,
    p_detail text, p_event_time timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- 0x636F6666_6572_09 ("coffer" + 9), held until commit, so positions are handed out in commit order.
    PERFORM pg_advisory_xact_lock(27988508289626633);
    INSERT INTO store.secret_events (secret_id, account_id, arn, name, kind, version_id, version_stages, detail,
                                     event_time)
    VALUES (p_secret_id, p_account_id, p_arn, p_name, p_kind, p_version_id,
            CASE WHEN p_version_id IS NULL THEN '{}'::text[] ELSE ARRAY(
                SELECT l.label FROM store.labels l
                WHERE l.secret_id = p_secret_id AND l.version_id = p_version_id ORDER BY l.label) END,
            p_detail, p_event_time);
END
$$;
