"""Secrets Manager uses a secret's customer-managed KMS key on behalf of the caller: the key's POLICY decides
(AWS KMS's rule), not only the caller's identity policy. Through the real store and kms over mTLS, with
gateway-signed principal assertions:

* a key whose policy names only carol (no root statement): the administrator (allow-all identity policy) is
  refused with the KMS AccessDenied on writes and reads of secrets under it; carol, named by the key policy,
  may use it;
* a secret under the default (AWS-managed) key works for the administrator;
* PutKeyPolicy back to the default policy reaches the store over the key-change stream (no restart).

The kms's own decisions on public calls (GetKeyPolicy/PutKeyPolicy, the lockout safety check, the default
key policy) are covered here too."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import errors
from coffer.core.policy.keypolicy import LOCKOUT_MESSAGE, default_key_policy_text
from coffer.testing.wait import eventually

from .conftest import ACCOUNT, StoreStack
from .signed_clients import Clients, acting_as, signed_clients

pytestmark = pytest.mark.integration

ADMIN = "user/admin"
CAROL = f"arn:aws:iam::{ACCOUNT}:user/carol"


@pytest.fixture
async def clients(stack: StoreStack) -> AsyncIterator[Clients]:
    async with signed_clients(stack) as c:
        yield c


def _only(principal_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OnlyOne",
                    "Effect": "Allow",
                    "Principal": {"AWS": principal_arn},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )


async def _create(c: Clients, name: str, *, key: str | None = None, value: str = "v1") -> None:
    req = pb.CreateSecretRequest(name=name, client_request_token=str(uuid.uuid4()), secret_string=value)
    if key is not None:
        req.kms_key_id = key
    await c.store.CreateSecret(req)


async def _get(c: Clients, name: str) -> str:
    resp = await c.store.GetSecretValue(pb.GetSecretValueRequest(secret_id=name))
    return str(resp.secret_string)


async def test_default_key_policy_get_and_put(clients: Clients) -> None:
    with acting_as(ADMIN):
        meta = (await clients.kms.CreateKey(kms_pb2.CreateKeyRequest())).key_metadata
        got = await clients.kms.GetKeyPolicy(kms_pb2.GetKeyPolicyRequest(key_id=meta.key_id))
        assert got.policy_name == "default"
        assert json.loads(got.policy) == json.loads(default_key_policy_text(ACCOUNT))
        with pytest.raises(errors.CofferError) as info:
            await clients.kms.GetKeyPolicy(
                kms_pb2.GetKeyPolicyRequest(key_id=meta.key_id, policy_name="other")
            )
        assert info.value.code == "ValidationException"
        # malformed → MalformedPolicyDocumentException
        with pytest.raises(errors.CofferError) as info:
            await clients.kms.PutKeyPolicy(kms_pb2.PutKeyPolicyRequest(key_id=meta.key_id, policy="{"))
        assert info.value.code == "MalformedPolicyDocumentException"
        # a policy that locks the caller out is refused unless the check is bypassed
        with pytest.raises(errors.CofferError) as info:
            await clients.kms.PutKeyPolicy(
                kms_pb2.PutKeyPolicyRequest(key_id=meta.key_id, policy=_only(CAROL))
            )
        assert (info.value.code, info.value.message) == ("MalformedPolicyDocumentException", LOCKOUT_MESSAGE)
        with pytest.raises(errors.CofferError) as info:
            await clients.kms.CreateKey(kms_pb2.CreateKeyRequest(policy=_only(CAROL)))
        assert info.value.message == LOCKOUT_MESSAGE
        await clients.kms.PutKeyPolicy(
            kms_pb2.PutKeyPolicyRequest(
                key_id=meta.key_id, policy=_only(CAROL), bypass_policy_lockout_safety_check=True
            )
        )
        # now the administrator's allow-all identity policy is not enough: the key policy does not delegate
        with pytest.raises(errors.AccessDenied) as denied:
            await clients.kms.DescribeKey(kms_pb2.DescribeKeyRequest(key_id=meta.key_id))
        assert denied.value.message == (
            f"User: arn:aws:iam::{ACCOUNT}:user/admin is not authorized to perform: kms:DescribeKey on "
            f"resource: {meta.arn} because no resource-based policy allows the kms:DescribeKey action"
        )
    with acting_as(CAROL):  # named by the key policy: allowed without any identity policy
        got = await clients.kms.GetKeyPolicy(kms_pb2.GetKeyPolicyRequest(key_id=meta.arn))
        assert json.loads(got.policy) == json.loads(_only(CAROL))


async def test_key_policy_decides_secrets_under_a_customer_key(clients: Clients) -> None:
    with acting_as(ADMIN):
        key = (
            await clients.kms.CreateKey(
                kms_pb2.CreateKeyRequest(policy=_only(CAROL), bypass_policy_lockout_safety_check=True)
            )
        ).key_metadata
        # the default key stays usable by every principal of the account through Secrets Manager
        await _create(clients, "kp/default", value="plain")
        assert await _get(clients, "kp/default") == "plain"
        # the administrator may not encrypt under carol's key
        with pytest.raises(errors.AccessDenied) as info:
            await _create(clients, "kp/admin", key=key.arn)
        assert info.value.message == "Access to KMS is not allowed"
    with acting_as("user/carol"):  # same ARN as CAROL, with an allow-all identity policy (secrets need one)
        await _create(clients, "kp/carol", key=key.arn, value="carol's")
        assert await _get(clients, "kp/carol") == "carol's"
    with acting_as(ADMIN):
        # the identity policy allows GetSecretValue, the key policy does not allow kms:Decrypt
        with pytest.raises(errors.AccessDenied) as info:
            await _get(clients, "kp/carol")
        assert info.value.message == "Access to KMS is not allowed"
        with pytest.raises(errors.AccessDenied):
            await clients.store.PutSecretValue(
                pb.PutSecretValueRequest(
                    secret_id="kp/carol", client_request_token=str(uuid.uuid4()), secret_string="admin's"
                )
            )
    with acting_as(CAROL):  # give the account back its delegation
        await clients.kms.PutKeyPolicy(
            kms_pb2.PutKeyPolicyRequest(
                key_id=key.key_id,
                policy=default_key_policy_text(ACCOUNT),
                bypass_policy_lockout_safety_check=True,
            )
        )
    with acting_as(ADMIN):
        # the key-change stream evicts the store's cached policy: the administrator reads it now
        assert (
            await eventually(lambda: _get(clients, "kp/carol"), timeout=10, retry_on=(errors.AccessDenied,))
            == "carol's"
        )


async def test_keys_are_per_account(clients: Clients) -> None:
    other = "111111111111"
    other_root = f"arn:aws:iam::{other}:root"
    with acting_as(other_root):
        mine = (await clients.kms.CreateKey(kms_pb2.CreateKeyRequest(description="other's"))).key_metadata
        assert mine.aws_account_id == other
        assert mine.arn == f"arn:aws:kms:local-1:{other}:key/{mine.key_id}"
        listed = await clients.kms.ListKeys(kms_pb2.ListKeysRequest())
        assert [k.key_arn for k in listed.keys] == [mine.arn]
        got = await clients.kms.GetKeyPolicy(kms_pb2.GetKeyPolicyRequest(key_id=mine.key_id))
        assert json.loads(got.policy) == json.loads(default_key_policy_text(other))
        sealed = await clients.kms.Encrypt(kms_pb2.EncryptRequest(key_id=mine.key_id, plaintext=b"hello"))
        opened = await clients.kms.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob))
        assert (opened.plaintext, opened.key_id) == (b"hello", mine.arn)
        await clients.kms.CreateAlias(
            kms_pb2.CreateAliasRequest(alias_name="alias/shared-name", target_key_id=mine.key_id)
        )
    with acting_as(ADMIN):
        ours = (await clients.kms.CreateKey(kms_pb2.CreateKeyRequest())).key_metadata
        assert ours.aws_account_id == ACCOUNT
        listed = await clients.kms.ListKeys(kms_pb2.ListKeysRequest())
        assert mine.arn not in [k.key_arn for k in listed.keys]
        assert ours.arn in [k.key_arn for k in listed.keys]
        # alias names are per account
        await clients.kms.CreateAlias(
            kms_pb2.CreateAliasRequest(alias_name="alias/shared-name", target_key_id=ours.key_id)
        )
        # the other account's key is not visible by id; by ARN, its key policy does not let this account in
        with pytest.raises(errors.NotFound):
            await clients.kms.DescribeKey(kms_pb2.DescribeKeyRequest(key_id=mine.key_id))
        with pytest.raises(errors.CofferError):
            await clients.kms.DescribeKey(kms_pb2.DescribeKeyRequest(key_id=mine.arn))
        # a ciphertext names its key: Decrypt finds it, and the key policy refuses this account
        with pytest.raises(errors.AccessDenied):
            await clients.kms.Decrypt(kms_pb2.DecryptRequest(ciphertext_blob=sealed.ciphertext_blob))
