-- Key policies (issue 9): every key has one key policy, named "default". Existing customer keys get AWS's
-- default key policy (the account's principals get access through their IAM policies); existing AWS-managed
-- keys get the policy of an AWS-managed key (crypto only through their service, metadata to the account).

ALTER TABLE kms.keys ADD COLUMN key_policy text;

UPDATE kms.keys SET key_policy = jsonb_build_object(
    'Version', '2012-10-17',
    'Id', 'key-default-1',
    'Statement', jsonb_build_array(jsonb_build_object(
        'Sid', 'Enable IAM User Permissions',
        'Effect', 'Allow',
        'Principal', jsonb_build_object('AWS', 'arn:aws:iam::' || account_id || ':root'),
        'Action', 'kms:*',
        'Resource', '*')))::text
WHERE key_manager = 'CUSTOMER';

-- AWS-managed keys: NULL means "the AWS-managed policy of the key's service", built by the kms from the
-- key's account, region and service (it cannot be changed by callers).
ALTER TABLE kms.keys ADD CONSTRAINT keys_customer_key_has_policy
    CHECK (key_manager <> 'CUSTOMER' OR key_policy IS NOT NULL);
