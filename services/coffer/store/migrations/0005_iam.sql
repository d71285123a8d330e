-- Coffer store: IAM (issue 9). Accounts, users, roles, inline identity policies, access keys and the session
-- credentials AssumeRole issues. No secret access key is stored: only the signing key derived from it
-- (coffer.crypto.access_keys.derive_signing_key), and of a session token only its SHA-256.
-- Every change NOTIFYs channel 'coffer_iam' with the access key ids or principal ARN it affects, so the
-- caches of principals (store, kms, gateways) drop them at once.

CREATE TABLE store.iam_accounts (
    account_id   text        PRIMARY KEY CHECK (account_id ~ '^[0-9]{12}$'),
    name         text        NOT NULL,
    email        text,
    -- The account whose admin created it (NULL for the root account 000000000000).
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Users and roles in one table: kind 'user' | 'role'. Names are unique per account and kind, case-insensitively
-- (IAM's rule).
CREATE TABLE store.iam_principals (
    id           bigserial   PRIMARY KEY,
    account_id   text        NOT NULL REFERENCES store.iam_accounts (account_id),
    kind         text        NOT NULL CHECK (kind IN ('user', 'role')),
    name         text        NOT NULL,
    path         text        NOT NULL DEFAULT '/',
    -- AIDA… (users) / AROA… (roles): aws:userid, and GetCallerIdentity's UserId.
    unique_id    text        NOT NULL UNIQUE,
    arn          text        NOT NULL UNIQUE,
    -- JSON object {"key": "value"}.
    tags         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Roles: the trust policy (AssumeRolePolicyDocument), as written.
    trust_policy text,
    max_session_seconds integer NOT NULL DEFAULT 3600 CHECK (max_session_seconds BETWEEN 900 AND 43200),
    description  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'role') = (trust_policy IS NOT NULL))
);
CREATE UNIQUE INDEX iam_principals_name ON store.iam_principals (account_id, kind, lower(name));

-- Inline identity policies (PutUserPolicy / PutRolePolicy), as written.
CREATE TABLE store.iam_policies (
    principal_id bigint      NOT NULL REFERENCES store.iam_principals (id) ON DELETE CASCADE,
    policy_name  text        NOT NULL,
    document     text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, policy_name)
);

-- Access keys of users (AKIA…) and session credentials of assumed roles (ASIA…).
CREATE TABLE store.iam_access_keys (
    access_key_id  text        PRIMARY KEY CHECK (access_key_id ~ '^(AKIA|ASIA)[A-Z2-7]{16}$'),
    principal_id   bigint      NOT NULL REFERENCES store.iam_principals (id) ON DELETE CASCADE,
    -- HMAC-SHA256(secret access key, "coffer-signing-v1"): what verifies a request signature.
    signing_key    bytea       NOT NULL CHECK (length(signing_key) = 32),
    status         text        NOT NULL DEFAULT 'Active' CHECK (status IN ('Active', 'Inactive')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    -- Sessions only (ASIA…): the session name, the SHA-256 of the session token, the expiry, session tags.
    session_name   text,
    token_sha256   bytea,
    expires_at     timestamptz,
    session_tags   jsonb,
    CHECK ((access_key_id LIKE 'ASIA%') = (expires_at IS NOT NULL)),
    CHECK ((access_key_id LIKE 'ASIA%') = (token_sha256 IS NOT NULL))
);
CREATE INDEX iam_access_keys_principal ON store.iam_access_keys (principal_id);
CREATE INDEX iam_access_keys_expired ON store.iam_access_keys (expires_at) WHERE expires_at IS NOT NULL;
