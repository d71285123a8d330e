-- Coffer store: the secret access key of every access key, sealed (issue 10). AWS SigV4 signs with a key derived
-- from the secret itself (HMAC chain from "AWS4" + secret), so the gateway's AWS endpoint needs it; the
-- signing key of 0005 cannot give it back. The secret is envelope-encrypted (AES-256-GCM under a fresh data key
-- of the deployment account's alias/aws/secretsmanager, KMS encryption context {"coffer:AccessKeyId": id}, so
-- a blob opens only on the row of the key id it was sealed for): coffer.store.access_key_secrets.
-- NULL for keys created before this release: they keep working for Coffer's own signing; the AWS endpoint
-- refuses them (rotate such a key to use the AWS protocol).
ALTER TABLE store.iam_access_keys
    ADD COLUMN secret_ciphertext  bytea,
    ADD COLUMN secret_wrapped_key bytea,
    ADD CONSTRAINT iam_access_keys_secret_sealed
        CHECK ((secret_ciphertext IS NULL) = (secret_wrapped_key IS NULL));
