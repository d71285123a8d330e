"""The store decides every public secretsmanager call with IAM policies (coffer.store.authz), against the real
store and kms services and PostgreSQL. The caller is bound the way the store's interceptor will bind it
(``coffer.rpc.context.caller_var``), and the use cases / servicer methods are called in-process: principals
with real identity policies do not exist on the wire yet (helper A2), the legacy admin's wire calls are in
tests/integration/gateway/test_gateway_resource_policies.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import errors
from coffer.core.listing import ListFilter
from coffer.core.model import Tag
from coffer.core.policy import PolicyKind, parse_policy
from coffer.core.principal import Principal, PrincipalKind, legacy_principal
from coffer.rpc.context import caller_var
from coffer.store.app import StoreApp
from coffer.store.servicer import SecretStoreServicer

from .conftest import ACCOUNT, REGION, StoreStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OTHER = "111111111111"
ADMIN = legacy_principal("user/admin")
SECRETS = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"


def _doc(*statements: Mapping[str, Any]) -> str:
    import json

    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def user(name: str, *statements: Mapping[str, Any], account: str = ACCOUNT, **tags: str) -> Principal:
    return Principal(
        arn=f"arn:aws:iam::{account}:user/{name}",
        account=account,
        kind=PrincipalKind.USER,
        name=name,
        unique_id=f"AIDA{name.upper()}",
        tags=tags,
        policies=(parse_policy(_doc(*statements), PolicyKind.IDENTITY, name="inline"),),
    )


def session(role: str, *statements: Mapping[str, Any], account: str) -> Principal:
    return Principal(
        arn=f"arn:aws:sts::{account}:assumed-role/{role}/s1",
        account=account,
        kind=PrincipalKind.ASSUMED_ROLE,
        name=role,
        unique_id=f"AROA{role.upper()}:s1",
        policies=(parse_policy(_doc(*statements), PolicyKind.IDENTITY, name="inline"),),
        role_arn=f"arn:aws:iam::{account}:role/{role}",
        session_name="s1",
    )


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = caller_var.set(principal)
    try:
        yield
    finally:
        caller_var.reset(token)


def app_of(stack: StoreStack) -> StoreApp:
    return stack.store_runtime.app


def servicer_of(stack: StoreStack) -> SecretStoreServicer:
    rt = stack.store_runtime
    return SecretStoreServicer(rt.app, rt.rotation, rt.replication)


async def create(
    stack: StoreStack,
    name: str,
    value: str = "v",
    *,
    tags: Mapping[str, str] | None = None,
    kms_key_id: str | None = None,
    principal: Principal = ADMIN,
) -> str:
    with acting_as(principal):
        result = await app_of(stack).create_secret(
            name=name,
            token=str(uuid.uuid4()),
            description=None,
            kms_key_id=kms_key_id,
            secret_string=value,
            secret_binary=None,
            tags=[Tag(k, v) for k, v in (tags or {}).items()],
            replica_regions=[],
            type=None,
        )
    return result.arn


async def get(stack: StoreStack, principal: Principal, secret_id: str) -> str:
    with acting_as(principal):
        result = await app_of(stack).get_secret_value(
            secret_id=secret_id, version_id=None, version_stage=None
        )
    assert result.value.text is not None
    return result.value.text


def denial(principal: Principal, action: str, resource: str, why: str) -> str:
    head = f"User: {principal.arn} is not authorized to perform: secretsmanager:{action}"
    return f"{head} on resource: {resource} {why}"


NO_IDENTITY = "because no identity-based policy allows the secretsmanager:{} action"


async def test_identity_policy_on_a_name_prefix(stack: StoreStack) -> None:
    app_x = await create(stack, "app/x", "app-value")
    db_y = await create(stack, "db/y", "db-value")
    alice = user(
        "alice", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRETS + "app/*"}
    )

    assert await get(stack, alice, "app/x") == "app-value"
    assert await get(stack, alice, app_x) == "app-value"
    with pytest.raises(errors.AccessDenied) as info:
        await get(stack, alice, "db/y")
    assert info.value.code == "AccessDeniedException"
    assert info.value.message == denial(alice, "GetSecretValue", db_y, NO_IDENTITY.format("GetSecretValue"))
    # a refused read leaves no trace; an allowed one sets LastAccessedDate (secret and version)
    accessed = (
        "SELECT s.last_accessed_on, v.last_accessed_on FROM store.secrets s"
        " JOIN store.versions v ON v.secret_id = s.id WHERE s.arn = $1"
    )
    assert tuple(await stack.db.fetchrow(accessed, db_y)) == (None, None)
    assert None not in tuple(await stack.db.fetchrow(accessed, app_x))

    # GetSecretValue only: PutSecretValue on app/x is refused, and nothing was written
    before = await stack.counts()
    with acting_as(alice), pytest.raises(errors.AccessDenied) as info:
        await servicer_of(stack).PutSecretValue(
            pb.PutSecretValueRequest(
                secret_id="app/x", secret_string="new", client_request_token=str(uuid.uuid4())
            ),
            None,
        )
    assert info.value.message == denial(alice, "PutSecretValue", app_x, NO_IDENTITY.format("PutSecretValue"))
    assert await stack.counts() == before
    assert await get(stack, ADMIN, "app/x") == "app-value"


async def test_explicit_deny_wins(stack: StoreStack) -> None:
    arn = await create(stack, "app/secret-1")
    bob = user(
        "bob",
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": SECRETS + "app/secret-*"},
    )
    with pytest.raises(errors.AccessDenied) as info:
        await get(stack, bob, "app/secret-1")
    assert info.value.message == denial(
        bob, "GetSecretValue", arn, "with an explicit deny in an identity-based policy"
    )
    with acting_as(bob):  # other actions stay allowed
        described = await app_of(stack).describe_secret(secret_id="app/secret-1")
    assert described.arn == arn


async def test_resource_tag_matches_principal_tag(stack: StoreStack) -> None:
    await create(stack, "pay/1", "pay", tags={"team": "payments"})
    await create(stack, "hr/1", "hr", tags={"team": "hr"})
    await create(stack, "untagged/1", "none")
    abac = {
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
        "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}},
    }
    carol = user("carol", abac, team="payments")
    assert await get(stack, carol, "pay/1") == "pay"
    for name in ("hr/1", "untagged/1"):
        with pytest.raises(errors.AccessDenied):
            await get(stack, carol, name)
    # re-tagging the secret changes the decision at once (the decision cache keys on the change sequence)
    with acting_as(ADMIN):
        await app_of(stack).tag_resource(secret_id="hr/1", tags=[Tag("team", "payments")])
    assert await get(stack, carol, "hr/1") == "hr"
    untagged = user("dave", abac)  # no team tag: the variable does not resolve
    with pytest.raises(errors.AccessDenied):
        await get(stack, untagged, "pay/1")


async def test_no_existence_oracle(stack: StoreStack) -> None:
    await create(stack, "app/real")
    narrow = user(
        "narrow", {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": SECRETS + "app/real-*"}
    )
    broad = user("broad", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
    for secret_id in ("nope", SECRETS + "nope-AbCdEf"):
        with pytest.raises(errors.AccessDenied) as denied:
            await get(stack, narrow, secret_id)
        assert denied.value.message == denial(
            narrow, "GetSecretValue", secret_id, NO_IDENTITY.format("GetSecretValue")
        )
        with pytest.raises(errors.NotFound):
            await get(stack, broad, secret_id)
    # the same for a call decided before its transaction (DescribeSecret through the servicer)
    with acting_as(narrow), pytest.raises(errors.AccessDenied):
        await servicer_of(stack).DescribeSecret(pb.DescribeSecretRequest(secret_id="nope"), None)


async def test_batch_get_reports_denials_in_errors(stack: StoreStack) -> None:
    await create(stack, "app/a", "a")
    db_b = await create(stack, "db/b", "b")
    reader = user(
        "reader",
        {
            "Effect": "Allow",
            "Action": ["secretsmanager:BatchGetSecretValue", "secretsmanager:ListSecrets"],
            "Resource": "*",
        },
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": SECRETS + "app/*"},
    )
    with acting_as(reader):
        result = await app_of(stack).batch_get_secret_value(
            secret_id_list=["app/a", "db/b"], filters=[], max_results=None, next_token=None
        )
    assert [v.name for v in result.values] == ["app/a"]
    assert [(e.secret_id, e.error_code) for e in result.errors] == [("db/b", "AccessDeniedException")]
    assert result.errors[0].message == denial(
        reader, "GetSecretValue", db_b, NO_IDENTITY.format("GetSecretValue")
    )

    with acting_as(reader):  # by Filters: only what the caller may read
        filtered = await app_of(stack).batch_get_secret_value(
            secret_id_list=[],
            filters=[ListFilter("name", ("app/", "db/"))],
            max_results=None,
            next_token=None,
        )
    assert [v.name for v in filtered.values] == ["app/a"] and filtered.errors == []

    no_batch = user(
        "nobatch", {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
    )
    with acting_as(no_batch), pytest.raises(errors.AccessDenied) as info:
        await app_of(stack).batch_get_secret_value(
            secret_id_list=["app/a"], filters=[], max_results=None, next_token=None
        )
    assert info.value.message == (
        f"User: {no_batch.arn} is not authorized to perform: secretsmanager:BatchGetSecretValue "
        "because no identity-based policy allows the secretsmanager:BatchGetSecretValue action"
    )


async def test_names_are_per_account(stack: StoreStack) -> None:
    admin_policy = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    other_admin = user("admin", admin_policy, account=OTHER)
    mine = await create(stack, "shared/name", "root-account")
    theirs = await create(stack, "shared/name", "other-account", principal=other_admin)
    assert mine.split(":")[4] == ACCOUNT and theirs.split(":")[4] == OTHER
    assert await get(stack, ADMIN, "shared/name") == "root-account"
    assert await get(stack, other_admin, "shared/name") == "other-account"
    with acting_as(other_admin):
        listed = await app_of(stack).list_secrets(
            include_planned_deletion=False,
            max_results=None,
            next_token=None,
            filters=[],
            sort_order=None,
            sort_by=None,
        )
    assert [s.arn for s in listed.secrets] == [theirs]
    # the same name again in one account is still refused
    with pytest.raises(errors.AlreadyExists):
        await create(stack, "shared/name", principal=other_admin)
    # another account's secret by full ARN, without a resource policy: denied
    with pytest.raises(errors.AccessDenied) as info:
        await get(stack, other_admin, mine)
    assert "because no resource-based policy allows" in info.value.message


async def test_cross_account_role_needs_resource_policy_and_customer_key(stack: StoreStack) -> None:
    # The key policy shares the key with the other account (as AWS requires across accounts); a key with
    # the default key policy (its own account only) is refused even with the resource policy's grant.
    shared_policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": [f"arn:aws:iam::{acct}:root" for acct in (ADMIN.account, OTHER)]},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )
    key = (
        await stack.kms.CreateKey(kms_pb2.CreateKeyRequest(description="shared", policy=shared_policy))
    ).key_metadata
    own_key = (await stack.kms.CreateKey(kms_pb2.CreateKeyRequest(description="unshared"))).key_metadata
    plain = await create(stack, "xacct/default-key", "default")
    cmk = await create(stack, "xacct/cmk", "customer", kms_key_id=key.arn)
    unshared = await create(stack, "xacct/unshared", "unshared", kms_key_id=own_key.arn)
    reader = session(
        "reader",
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        # across accounts the caller's own policy must also allow it to use the key (AWS's rule)
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
        account=OTHER,
    )
    grant = _doc(
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{OTHER}:role/reader"},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }
    )
    # no resource policy yet: refused
    with pytest.raises(errors.AccessDenied):
        await get(stack, reader, cmk)
    for arn in (plain, cmk, unshared):
        with acting_as(ADMIN):
            await app_of(stack).put_resource_policy(
                secret_id=arn, resource_policy=grant, block_public_policy=True
            )
    with pytest.raises(errors.AccessDenied) as info:
        await get(stack, reader, plain)
    assert info.value.message == "Access to KMS is not allowed"
    assert await get(stack, reader, cmk) == "customer"
    with pytest.raises(errors.AccessDenied) as info:
        await get(stack, reader, unshared)
    assert "kms:" in info.value.message or info.value.message == "Access to KMS is not allowed"
    # by name the role's own account is searched: nothing there
    with pytest.raises(errors.NotFound):
        await get(stack, reader, "xacct/cmk")
    # the grant covers GetSecretValue only
    with acting_as(reader), pytest.raises(errors.AccessDenied):
        await servicer_of(stack).DescribeSecret(pb.DescribeSecretRequest(secret_id=cmk), None)


async def test_resource_policy_operations(stack: StoreStack) -> None:
    arn = await create(stack, "rp/one")
    svc = servicer_of(stack)
    public = _doc(
        {"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
    )
    with acting_as(ADMIN):
        with pytest.raises(errors.InvalidParameter) as info:
            await svc.PutResourcePolicy(
                pb.PutResourcePolicyRequest(
                    secret_id="rp/one", resource_policy=public, block_public_policy=True
                ),
                None,
            )
        assert info.value.code == "PublicPolicyException"
        with pytest.raises(errors.InvalidParameter) as info:
            await svc.PutResourcePolicy(
                pb.PutResourcePolicyRequest(secret_id="rp/one", resource_policy='{"Statement": ['),
                None,
            )
        assert (info.value.code, info.value.message) == (
            "MalformedPolicyDocumentException",
            "This policy has invalid syntax.",
        )
        got = await svc.GetResourcePolicy(pb.GetResourcePolicyRequest(secret_id="rp/one"), None)
        assert (got.arn, got.name, got.HasField("resource_policy")) == (arn, "rp/one", False)

        validated = await svc.ValidateResourcePolicy(
            pb.ValidateResourcePolicyRequest(secret_id="rp/one", resource_policy=public),
            None,
        )
        assert not validated.policy_validation_passed
        assert [e.check_name for e in validated.validation_errors] == ["BROAD_ACCESS"]

        # BlockPublicPolicy defaults to false (as AWS): the public policy is accepted, and grants directly
        put = await svc.PutResourcePolicy(
            pb.PutResourcePolicyRequest(secret_id="rp/one", resource_policy=public),
            None,
        )
        assert (put.arn, put.name) == (arn, "rp/one")
        got = await svc.GetResourcePolicy(pb.GetResourcePolicyRequest(secret_id=arn), None)
        assert got.resource_policy == public
    nobody = user("nobody", {"Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": "*"})
    assert await get(stack, nobody, "rp/one") == "v"  # Principal "*" in the same account grants directly
    with acting_as(ADMIN):
        deleted = await svc.DeleteResourcePolicy(pb.DeleteResourcePolicyRequest(secret_id="rp/one"), None)
        assert deleted.arn == arn
        got = await svc.GetResourcePolicy(pb.GetResourcePolicyRequest(secret_id="rp/one"), None)
        assert not got.HasField("resource_policy")
    with pytest.raises(errors.AccessDenied):
        await get(stack, nobody, "rp/one")


async def test_resource_policy_explicit_deny(stack: StoreStack) -> None:
    arn = await create(stack, "rp/deny")
    deny = _doc(
        {
            "Effect": "Deny",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/erin"},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*",
        }
    )
    with acting_as(ADMIN):
        await app_of(stack).put_resource_policy(
            secret_id="rp/deny", resource_policy=deny, block_public_policy=True
        )
    erin = user("erin", {"Effect": "Allow", "Action": "*", "Resource": "*"})
    with pytest.raises(errors.AccessDenied) as info:
        await get(stack, erin, "rp/deny")
    assert info.value.message == denial(
        erin, "GetSecretValue", arn, "with an explicit deny in a resource-based policy"
    )
    assert await get(stack, ADMIN, "rp/deny") == "v"


async def test_internal_and_legacy_service_callers_are_not_decided(stack: StoreStack) -> None:
    await create(stack, "svc/x", "value")
    # no caller at all (housekeeping, replication apply) and the legacy rotation service principal
    assert (await app_of(stack).get_secret_value(secret_id="svc/x", version_id=None, version_stage=None)).arn
    assert await get(stack, legacy_principal("service/rotation"), "svc/x") == "value"


async def test_retagging_away_ones_own_access_is_refused(stack: StoreStack) -> None:
    await create(stack, "team/secret", tags={"team": "payments"})
    frank = user(
        "frank",
        {
            "Effect": "Allow",
            "Action": "secretsmanager:*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/team": "${aws:PrincipalTag/team}"}},
        },
        team="payments",
    )
    with acting_as(frank):
        await app_of(stack).tag_resource(secret_id="team/secret", tags=[Tag("env", "prod")])
        with pytest.raises(errors.AccessDenied):
            await app_of(stack).tag_resource(secret_id="team/secret", tags=[Tag("team", "hr")])
        with pytest.raises(errors.AccessDenied):
            await app_of(stack).untag_resource(secret_id="team/secret", tag_keys=["team"])
        described = await app_of(stack).describe_secret(secret_id="team/secret")
    assert described.tags == (Tag("team", "payments"), Tag("env", "prod"))


async def test_create_secret_is_decided_on_the_arn_it_will_get(stack: StoreStack) -> None:
    gina = user(
        "gina", {"Effect": "Allow", "Action": "secretsmanager:CreateSecret", "Resource": SECRETS + "app/*"}
    )
    arn = await create(stack, "app/new", principal=gina)
    assert arn.startswith(SECRETS + "app/new-")
    with pytest.raises(errors.AccessDenied) as info:
        await create(stack, "db/new", principal=gina)
    assert info.value.message.startswith(
        f"User: {gina.arn} is not authorized to perform: secretsmanager:CreateSecret"
        f" on resource: {SECRETS}db/new-"
    )
    # Tags also need TagResource (aws:RequestTag / aws:TagKeys are in the request)
    with pytest.raises(errors.AccessDenied) as info:
        await create(stack, "app/tagged", tags={"team": "x"}, principal=gina)
    assert "secretsmanager:TagResource" in info.value.message
    # an existing name is not revealed to a caller who may not create it
    await create(stack, "db/existing")
    with pytest.raises(errors.AccessDenied):
        await create(stack, "db/existing", principal=gina)
    assert await stack.db.fetchval("SELECT count(*) FROM store.secrets WHERE name LIKE 'db/new%'") == 0
