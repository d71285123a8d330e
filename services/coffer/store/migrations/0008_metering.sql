-- Coffer store: metering (issue 9). What an account used per calendar month (UTC): public API calls per
-- operation, and the secret storage spans SecretMonths are computed from (coffer.core.usage, in SQL by
-- coffer.store.usage).

-- Public Secrets Manager calls, counted in memory by each store process and added here in batches.
CREATE TABLE store.usage_calls (
    account_id text   NOT NULL,
    month      text   NOT NULL CHECK (month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    operation  text   NOT NULL,
    count      bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (account_id, month, operation)
);

-- One span per stored secret (or replica: counted apart) from its creation to its purge (or the replica's
-- removal). The triggers below open and close them, whatever path creates or removes the row.
CREATE TABLE store.usage_secret_spans (
    id         bigserial   PRIMARY KEY,
    account_id text        NOT NULL,
    secret_arn text        NOT NULL,
    region     text        NOT NULL,
    is_replica boolean     NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);

-- at most one open span per secret (ARN) and region
CREATE UNIQUE INDEX usage_spans_open ON store.usage_secret_spans (secret_arn, region) WHERE ended_at IS NULL;
CREATE INDEX usage_spans_by_account ON store.usage_secret_spans (account_id, started_at);

-- The account of a secret: the 5th field of its ARN.
CREATE FUNCTION store.usage_open_span() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- a primary counts from its creation time (the service clock); a replica from when it arrived here
    -- (its created_at is the primary's)
    INSERT INTO store.usage_secret_spans (account_id, secret_arn, region, is_replica, started_at)
    VALUES (split_part(NEW.arn, ':', 5), NEW.arn, NEW.region, NEW.is_replica,
            CASE WHEN NEW.is_replica THEN now() ELSE NEW.created_at END)
    ON CONFLICT (secret_arn, region) WHERE ended_at IS NULL DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION store.usage_close_span() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- a purged secret is counted until its scheduled deletion date; a removed replica until now
    UPDATE store.usage_secret_spans
       SET ended_at = GREATEST(started_at, COALESCE(OLD.deletion_date, now()))
     WHERE secret_arn = OLD.arn AND region = OLD.region AND ended_at IS NULL;
    RETURN NULL;
END $$;

-- A promoted replica (is_replica true → false) stops counting as a replica and starts counting as a primary.
CREATE FUNCTION store.usage_promote_span() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.is_replica IS DISTINCT FROM NEW.is_replica THEN
        UPDATE store.usage_secret_spans
           SET ended_at = GREATEST(started_at, now())
         WHERE secret_arn = OLD.arn AND region = OLD.region AND ended_at IS NULL;
        INSERT INTO store.usage_secret_spans (account_id, secret_arn, region, is_replica, started_at)
        VALUES (split_part(NEW.arn, ':', 5), NEW.arn, NEW.region, NEW.is_replica, now());
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER secrets_usage_open AFTER INSERT ON store.secrets
    FOR EACH ROW EXECUTE FUNCTION store.usage_open_span();
CREATE TRIGGER secrets_usage_close AFTER DELETE ON store.secrets
    FOR EACH ROW EXECUTE FUNCTION store.usage_close_span();
CREATE TRIGGER secrets_usage_promote AFTER UPDATE OF is_replica ON store.secrets
    FOR EACH ROW EXECUTE FUNCTION store.usage_promote_span();

-- The secrets stored before metering: open spans from their creation.
INSERT INTO store.usage_secret_spans (account_id, secret_arn, region, is_replica, started_at)
SELECT split_part(arn, ':', 5), arn, region, is_replica, created_at FROM store.secrets;
