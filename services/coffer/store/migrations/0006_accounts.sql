-- Coffer store: secrets belong to an account (issue 9). Names are unique per (account, name), not globally.
-- The account is the ARN's fifth field: a generated column, so every row (existing ones: the deployment's
-- configured account their ARNs were made with; replicas: the primary's account, since a replica ARN is the
-- primary ARN with the region swapped) carries it without any INSERT naming it.
ALTER TABLE store.secrets
    ADD COLUMN account_id text GENERATED ALWAYS AS (split_part(arn, ':', 5)) STORED;

ALTER TABLE store.secrets DROP CONSTRAINT secrets_name_key;
CREATE UNIQUE INDEX secrets_account_name ON store.secrets (account_id, name);

-- Listing is per account: the keyset orders lead with the account.
DROP INDEX store.secrets_list_created;
DROP INDEX store.secrets_list_name;
CREATE INDEX secrets_list_created ON store.secrets (account_id, created_at, id);
CREATE INDEX secrets_list_name ON store.secrets (account_id, (name COLLATE "C"), id);
