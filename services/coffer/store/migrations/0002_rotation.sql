-- Coffer store: rotation (issue 3). PostgreSQL is the truth about every rotation; Redis only carries jobs.
-- The secrets table already holds the configuration (rotation_enabled, rotation_lambda_arn, rotation_rotator,
-- rotation_rules, last_rotated_at, next_rotation_at).

-- One row per rotation attempt (= one ClientRequestToken). A try is one run of the steps by one worker
-- under a lease; a failed try is retried with back-off until the attempt succeeds or is marked Failed.
CREATE TABLE store.rotation_attempts (
    id                 bigserial   PRIMARY KEY,
    secret_id          bigint      NOT NULL REFERENCES store.secrets (id) ON DELETE CASCADE,
    token              text        NOT NULL,
    rotator            text        NOT NULL,
    -- false: a RotateImmediately=false configuration test (testSecret only, on a temporary copy).
    rotate_immediately boolean     NOT NULL,
    -- 'api' (RotateSecret) or 'schedule' (the rotation became due).
    trigger            text        NOT NULL CHECK (trigger IN ('api', 'schedule')),
    status             text        NOT NULL
        CHECK (status IN ('Pending', 'InProgress', 'Succeeded', 'Failed', 'Cancelled')),
    tries              integer     NOT NULL DEFAULT 0,
    requested_at       timestamptz NOT NULL,
    started_at         timestamptz,
    finished_at        timestamptz,
    -- When the next try may start (back-off after a failed try).
    next_try_at        timestamptz,
    lease_owner        text,
    lease_expires_at   timestamptz,
    lease_seconds      integer,
    error              text,
    UNIQUE (secret_id, token)
);

-- At most one unfinished attempt per secret: two rotations of one secret never run at once.
CREATE UNIQUE INDEX rotation_attempts_one_open ON store.rotation_attempts (secret_id)
    WHERE status IN ('Pending', 'InProgress');
CREATE INDEX rotation_attempts_open ON store.rotation_attempts (next_try_at)
    WHERE status IN ('Pending', 'InProgress');
CREATE INDEX rotation_attempts_by_secret ON store.rotation_attempts (secret_id, id DESC);

-- Progress of each step of each try, written before the target system is touched.
CREATE TABLE store.rotation_steps (
    attempt_id  bigint      NOT NULL REFERENCES store.rotation_attempts (id) ON DELETE CASCADE,
    try_number  integer     NOT NULL,
    step        text        NOT NULL
        CHECK (step IN ('createSecret', 'setSecret', 'testSecret', 'finishSecret')),
    status      text        NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
    worker_id   text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    error       text,
    PRIMARY KEY (attempt_id, try_number, step)
);

-- Registered custom rotation functions (what AWS does with Lambdas): RotateSecret takes their ARN.
CREATE TABLE store.rotation_functions (
    name        text        PRIMARY KEY,
    arn         text        NOT NULL UNIQUE,
    endpoint    text        NOT NULL,
    ca_pem      text        NOT NULL DEFAULT '',
    server_name text,
    created_at  timestamptz NOT NULL
);
