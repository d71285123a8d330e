"""The IAM admin API, STS and Organizations through the real gateway → store (real PostgreSQL, TLS, gRPC),
called by the SDK as the legacy admin of the root account (allow-all identity policy)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

import asyncpg
import pytest

from coffer.core import errors
from coffer.crypto.access_keys import derive_signing_key, token_digest

from .conftest import IamStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = "000000000000"
READ_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
    }
)


def trust(*principals: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": list(principals)}, "Action": "sts:AssumeRole"}
            ],
        }
    )


async def test_users_create_get_list_tag_delete(iam_stack: IamStack) -> None:
    iam = iam_stack.admin.iam
    created = (await iam.create_user(user_name="alice", tags=[{"key": "team", "value": "payments"}])).user
    assert created.user_name == "alice" and created.path == "/"
    assert created.arn == f"arn:aws:iam::{ROOT}:user/alice"
    assert created.user_id.startswith("AIDA") and len(created.user_id) == 21
    assert [(t.key, t.value) for t in created.tags] == [("team", "payments")]
    assert abs(created.create_date.ToDatetime(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(
        minutes=5
    )

    with pytest.raises(errors.EntityAlreadyExists, match=re.escape("User with name ALICE already exists.")):
        await iam.create_user(user_name="ALICE")  # names are unique case-insensitively
    with pytest.raises(errors.IamValidation) as bad:
        await iam.create_user(user_name="no spaces")
    assert bad.value.code == "ValidationError" and "[\\w+=,.@-]+" in bad.value.message
    with pytest.raises(errors.IamValidation):
        await iam.create_user(user_name="x" * 65)

    got = (await iam.get_user(user_name="alice")).user
    assert got.user_id == created.user_id and got.arn == created.arn
    with pytest.raises(errors.NoSuchEntity, match=re.escape("The user with name nobody cannot be found.")):
        await iam.get_user(user_name="nobody")

    for name in ("bob", "carol", "dave"):
        await iam.create_user(user_name=name)
    # the bootstrap's users (admin, coffer-rotation) are listed too, in name order
    everyone = ["admin", "alice", "bob", "carol", "coffer-rotation", "dave"]
    page1 = await iam.list_users(max_items=2)
    assert [u.user_name for u in page1.users] == everyone[:2] and page1.is_truncated
    page2 = await iam.list_users(max_items=2, marker=page1.marker)
    assert [u.user_name for u in page2.users] == everyone[2:4] and page2.is_truncated
    page3 = await iam.list_users(max_items=2, marker=page2.marker)
    assert [u.user_name for u in page3.users] == everyone[4:]
    assert not page3.is_truncated and not page3.HasField("marker")
    with pytest.raises(errors.IamValidation, match="Invalid Marker"):
        await iam.list_users(marker="!!!")

    await iam.tag_user(
        user_name="alice", tags=[{"key": "env", "value": "prod"}, {"key": "TEAM", "value": "ops"}]
    )
    tags = await iam.list_user_tags(user_name="alice")
    assert [(t.key, t.value) for t in tags.tags] == [("TEAM", "ops"), ("env", "prod")]
    await iam.untag_user(user_name="alice", tag_keys=["team"])
    tags = await iam.list_user_tags(user_name="alice")
    assert [(t.key, t.value) for t in tags.tags] == [("env", "prod")]
    with pytest.raises(errors.InvalidParameter, match="cannot start with the prefix aws:"):
        await iam.tag_user(user_name="alice", tags=[{"key": "aws:x", "value": "y"}])

    await iam.delete_user(user_name="bob")
    with pytest.raises(errors.NoSuchEntity):
        await iam.get_user(user_name="bob")
    with pytest.raises(errors.NoSuchEntity):
        await iam.delete_user(user_name="bob")


async def test_roles_create_get_list_tag_update_delete(iam_stack: IamStack) -> None:
    iam = iam_stack.admin.iam
    doc = trust(f"arn:aws:iam::{ROOT}:root")
    role = (
        await iam.create_role(
            role_name="app",
            assume_role_policy_document=doc,
            description="the app",
            max_session_duration=7200,
            tags=[{"key": "team", "value": "a"}],
        )
    ).role
    assert role.arn == f"arn:aws:iam::{ROOT}:role/app" and role.role_id.startswith("AROA")
    assert role.max_session_duration == 7200 and role.description == "the app"
    assert role.assume_role_policy_document == doc
    with pytest.raises(errors.EntityAlreadyExists, match=re.escape("Role with name app already exists.")):
        await iam.create_role(role_name="app", assume_role_policy_document=doc)
    with pytest.raises(errors.IamValidation):
        await iam.create_role(role_name="long", assume_role_policy_document=doc, max_session_duration=43201)

    # A trust policy must name a principal and may not name a Resource (IAM's MalformedPolicyDocument).
    no_principal = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}
    )
    with pytest.raises(errors.InvalidParameter) as malformed:
        await iam.create_role(role_name="bad", assume_role_policy_document=no_principal)
    assert malformed.value.code == "MalformedPolicyDocument"
    with_resource = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole", "Resource": "*"}],
        }
    )
    with pytest.raises(errors.InvalidParameter, match="Has prohibited field Resource"):
        await iam.create_role(role_name="bad", assume_role_policy_document=with_resource)

    got = (await iam.get_role(role_name="APP")).role
    assert got.role_id == role.role_id and [(t.key, t.value) for t in got.tags] == [("team", "a")]
    await iam.create_role(role_name="batch", assume_role_policy_document=doc)
    listed = await iam.list_roles()
    # coffer-rotation is the rotation service's role (the bootstrap's)
    assert [r.role_name for r in listed.roles] == ["app", "batch", "coffer-rotation"]
    assert not listed.is_truncated

    await iam.tag_role(role_name="app", tags=[{"key": "env", "value": "prod"}])
    await iam.untag_role(role_name="app", tag_keys=["team"])
    assert [(t.key, t.value) for t in (await iam.get_role(role_name="app")).role.tags] == [("env", "prod")]

    new_doc = trust(f"arn:aws:iam::{ROOT}:user/admin")
    await iam.update_assume_role_policy(role_name="app", policy_document=new_doc)
    assert (await iam.get_role(role_name="app")).role.assume_role_policy_document == new_doc

    await iam.put_role_policy(role_name="app", policy_name="read", policy_document=READ_POLICY)
    with pytest.raises(errors.DeleteConflict, match="must delete policies first"):
        await iam.delete_role(role_name="app")
    await iam.delete_role_policy(role_name="app", policy_name="read")
    await iam.delete_role(role_name="app")
    with pytest.raises(errors.NoSuchEntity, match=re.escape("The role with name app cannot be found.")):
        await iam.get_role(role_name="app")


async def test_inline_policies_round_trip_and_malformed_refusal(iam_stack: IamStack) -> None:
    iam = iam_stack.admin.iam
    await iam.create_user(user_name="alice")
    await iam.create_role(role_name="app", assume_role_policy_document=trust(f"arn:aws:iam::{ROOT}:root"))

    await iam.put_user_policy(user_name="alice", policy_name="read", policy_document=READ_POLICY)
    got = await iam.get_user_policy(user_name="alice", policy_name="read")
    assert (got.user_name, got.policy_name, got.policy_document) == ("alice", "read", READ_POLICY)
    await iam.put_user_policy(user_name="alice", policy_name="also", policy_document=READ_POLICY)
    names = await iam.list_user_policies(user_name="alice")
    assert list(names.policy_names) == ["also", "read"] and not names.is_truncated
    paged = await iam.list_user_policies(user_name="alice", max_items=1)
    assert list(paged.policy_names) == ["also"] and paged.is_truncated
    rest = await iam.list_user_policies(user_name="alice", marker=paged.marker)
    assert list(rest.policy_names) == ["read"]

    await iam.put_role_policy(role_name="app", policy_name="read", policy_document=READ_POLICY)
    assert (await iam.get_role_policy(role_name="app", policy_name="read")).policy_document == READ_POLICY
    assert list((await iam.list_role_policies(role_name="app")).policy_names) == ["read"]

    # AWS IAM's messages for malformed identity policies.
    old_version = READ_POLICY.replace("2012-10-17", "2008-10-17")
    with pytest.raises(errors.InvalidParameter) as exc:
        await iam.put_user_policy(user_name="alice", policy_name="p", policy_document=old_version)
    assert exc.value.code == "MalformedPolicyDocument"
    assert exc.value.message == "Policy document must be version 2012-10-17 or greater."
    with_principal = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}],
        }
    )
    with pytest.raises(
        errors.InvalidParameter, match=re.escape("Policy document should not specify a principal.")
    ):
        await iam.put_role_policy(role_name="app", policy_name="p", policy_document=with_principal)
    no_resource = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]})
    with pytest.raises(errors.InvalidParameter, match=re.escape("Policy statement must contain resources.")):
        await iam.put_user_policy(user_name="alice", policy_name="p", policy_document=no_resource)
    with pytest.raises(errors.InvalidParameter):
        await iam.put_user_policy(user_name="alice", policy_name="p", policy_document="{not json")
    assert list((await iam.list_user_policies(user_name="alice")).policy_names) == ["also", "read"]

    with pytest.raises(
        errors.NoSuchEntity, match=re.escape("The user policy with name nope cannot be found.")
    ):
        await iam.get_user_policy(user_name="alice", policy_name="nope")
    with pytest.raises(errors.NoSuchEntity):
        await iam.put_user_policy(user_name="nobody", policy_name="p", policy_document=READ_POLICY)

    # DeleteConflict until the policies are gone.
    with pytest.raises(
        errors.DeleteConflict, match=re.escape("Cannot delete entity, must delete policies first.")
    ):
        await iam.delete_user(user_name="alice")
    await iam.delete_user_policy(user_name="alice", policy_name="read")
    await iam.delete_user_policy(user_name="alice", policy_name="also")
    with pytest.raises(errors.NoSuchEntity):
        await iam.delete_user_policy(user_name="alice", policy_name="also")
    await iam.delete_user(user_name="alice")


async def test_access_keys_create_list_update_delete_and_the_limit(iam_stack: IamStack) -> None:
    iam = iam_stack.admin.iam
    await iam.create_user(user_name="alice")
    first = (await iam.create_access_key(user_name="alice")).access_key
    assert first.access_key_id.startswith("AKIA") and len(first.access_key_id) == 20
    assert len(first.secret_access_key) == 40 and first.status == "Active" and first.user_name == "alice"
    second = (await iam.create_access_key(user_name="alice")).access_key
    with pytest.raises(errors.IamLimitExceeded, match="Cannot exceed quota for AccessKeysPerUser: 2"):
        await iam.create_access_key(user_name="alice")

    listed = await iam.list_access_keys(user_name="alice")
    assert sorted(k.access_key_id for k in listed.access_key_metadata) == sorted(
        [first.access_key_id, second.access_key_id]
    )
    assert all(k.status == "Active" and k.user_name == "alice" for k in listed.access_key_metadata)

    # Only the derived signing key is stored, never the secret.
    conn = await asyncpg.connect(iam_stack.database_url)
    try:
        stored = await conn.fetchval(
            "SELECT signing_key FROM store.iam_access_keys WHERE access_key_id = $1", first.access_key_id
        )
        leaked = await conn.fetchval(
            "SELECT count(*) FROM store.iam_access_keys WHERE position($1::bytea in signing_key) > 0",
            first.secret_access_key.encode(),
        )
    finally:
        await conn.close()
    assert bytes(stored) == derive_signing_key(first.secret_access_key) and leaked == 0

    await iam.update_access_key(user_name="alice", access_key_id=first.access_key_id, status="Inactive")
    statuses = {
        k.access_key_id: k.status for k in (await iam.list_access_keys(user_name="alice")).access_key_metadata
    }
    assert statuses == {first.access_key_id: "Inactive", second.access_key_id: "Active"}
    with pytest.raises(errors.IamValidation, match=r"\[Active, Inactive\]"):
        await iam.update_access_key(user_name="alice", access_key_id=first.access_key_id, status="Paused")
    with pytest.raises(
        errors.NoSuchEntity, match=re.escape("The Access Key with id AKIAAAAAAAAAAAAAAAAA cannot be found.")
    ):
        await iam.update_access_key(user_name="alice", access_key_id="AKIAAAAAAAAAAAAAAAAA", status="Active")

    with pytest.raises(
        errors.DeleteConflict, match=re.escape("Cannot delete entity, must delete access keys first.")
    ):
        await iam.delete_user(user_name="alice")
    await iam.delete_access_key(user_name="alice", access_key_id=first.access_key_id)
    with pytest.raises(errors.NoSuchEntity):
        await iam.delete_access_key(user_name="alice", access_key_id=first.access_key_id)
    third = (await iam.create_access_key(user_name="alice")).access_key  # back under the limit
    for key in (second, third):
        await iam.delete_access_key(user_name="alice", access_key_id=key.access_key_id)
    assert list((await iam.list_access_keys(user_name="alice")).access_key_metadata) == []
    await iam.delete_user(user_name="alice")


async def test_get_caller_identity(iam_stack: IamStack) -> None:
    me = await iam_stack.admin.sts.get_caller_identity()
    assert (me.account, me.arn) == (ROOT, f"arn:aws:iam::{ROOT}:user/admin")
    assert me.user_id.startswith("AIDA")

    with pytest.raises(errors.EntityAlreadyExists):  # the bootstrap made it
        await iam_stack.admin.iam.create_user(user_name="admin")
    row = (await iam_stack.admin.iam.get_user(user_name="admin")).user
    assert (await iam_stack.admin.sts.get_caller_identity()).user_id == row.user_id
    # Without a user name, GetUser and CreateAccessKey act on the calling user.
    assert (await iam_stack.admin.iam.get_user()).user.arn == row.arn
    key = (await iam_stack.admin.iam.create_access_key()).access_key
    assert key.user_name == "admin"


async def test_assume_role_allowed_refused_and_duration_bounds(iam_stack: IamStack) -> None:
    iam, sts = iam_stack.admin.iam, iam_stack.admin.sts
    await iam.create_role(
        role_name="app",
        assume_role_policy_document=trust(f"arn:aws:iam::{ROOT}:root"),
        max_session_duration=7200,
    )
    await iam.create_role(
        role_name="locked", assume_role_policy_document=trust(f"arn:aws:iam::{ROOT}:user/someone-else")
    )
    app_arn = f"arn:aws:iam::{ROOT}:role/app"
    role_id = (await iam.get_role(role_name="app")).role.role_id

    before = dt.datetime.now(dt.UTC)
    out = await sts.assume_role(
        role_arn=app_arn, role_session_name="s1", tags=[{"key": "team", "value": "payments"}]
    )
    creds, user = out.credentials, out.assumed_role_user
    assert creds.access_key_id.startswith("ASIA") and len(creds.access_key_id) == 20
    assert creds.secret_access_key and creds.session_token
    expiry = creds.expiration.ToDatetime(tzinfo=dt.UTC)
    assert (
        before + dt.timedelta(seconds=3590) <= expiry <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3610)
    )
    assert user.assumed_role_id == f"{role_id}:s1"
    assert user.arn == f"arn:aws:sts::{ROOT}:assumed-role/app/s1"

    conn = await asyncpg.connect(iam_stack.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT k.signing_key, k.token_sha256, k.session_name, k.session_tags, k.expires_at, p.name "
            "FROM store.iam_access_keys k JOIN store.iam_principals p ON p.id = k.principal_id "
            "WHERE k.access_key_id = $1",
            creds.access_key_id,
        )
    finally:
        await conn.close()
    assert row["name"] == "app" and row["session_name"] == "s1"
    assert bytes(row["signing_key"]) == derive_signing_key(creds.secret_access_key)
    assert bytes(row["token_sha256"]) == token_digest(creds.session_token)
    assert json.loads(row["session_tags"]) == {"team": "payments"} and row["expires_at"] == expiry

    longest = await sts.assume_role(role_arn=app_arn, role_session_name="long", duration_seconds=7200)
    assert longest.credentials.expiration.ToDatetime(tzinfo=dt.UTC) > expiry + dt.timedelta(seconds=3000)
    with pytest.raises(errors.IamValidation, match="exceeds the MaxSessionDuration set for this role"):
        await sts.assume_role(role_arn=app_arn, role_session_name="s2", duration_seconds=7201)
    with pytest.raises(errors.IamValidation, match="greater than or equal to 900"):
        await sts.assume_role(role_arn=app_arn, role_session_name="s2", duration_seconds=899)
    with pytest.raises(errors.IamValidation, match="less than or equal to 43200"):
        await sts.assume_role(role_arn=app_arn, role_session_name="s2", duration_seconds=43201)
    with pytest.raises(errors.IamValidation, match="roleSessionName"):
        await sts.assume_role(role_arn=app_arn, role_session_name="x")
    with pytest.raises(errors.IamValidation, match="roleSessionName"):
        await sts.assume_role(role_arn=app_arn, role_session_name="has space")

    # The trust policy names someone else: refused although the admin's identity policy allows everything.
    locked = f"arn:aws:iam::{ROOT}:role/locked"
    with pytest.raises(errors.AccessDenied) as denied:
        await sts.assume_role(role_arn=locked, role_session_name="s1")
    assert denied.value.message == (
        f"User: arn:aws:iam::{ROOT}:user/admin is not authorized to perform: sts:AssumeRole "
        f"on resource: {locked}"
    )
    # A role that does not exist (or not at that path) is refused the same way (not revealed).
    with pytest.raises(errors.AccessDenied):
        await sts.assume_role(role_arn=f"arn:aws:iam::{ROOT}:role/nope", role_session_name="s1")
    with pytest.raises(errors.AccessDenied):
        await sts.assume_role(role_arn=f"arn:aws:iam::{ROOT}:role/other/app", role_session_name="s1")
    # A principal without an identity policy allowing sts:AssumeRole: the account-root trust only delegates.
    service = iam_stack.client("service/rotation")
    try:
        with pytest.raises(errors.AccessDenied):
            await service.sts.assume_role(role_arn=app_arn, role_session_name="s1")
    finally:
        await service.close()

    # Deleting the role ends its sessions.
    await iam.delete_role(role_name="app")
    conn = await asyncpg.connect(iam_stack.database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM store.iam_access_keys WHERE access_key_id LIKE 'ASIA%' AND principal_id"
            " NOT IN (SELECT id FROM store.iam_principals WHERE name = 'coffer-rotation')"
        )  # (sessions of coffer-rotation are not the ones this test made)
    finally:
        await conn.close()
    assert left == 0


async def test_create_account_by_the_root_admin(iam_stack: IamStack) -> None:
    orgs = iam_stack.admin.organizations
    out = await orgs.create_account(account_name="team-a", email="team-a@example.com")
    account = out.account
    assert len(account.id) == 12 and account.id.isdigit() and account.id != ROOT
    assert (account.name, account.email, account.status) == ("team-a", "team-a@example.com", "ACTIVE")
    assert out.admin_user_name == "admin" and out.admin_user_arn == f"arn:aws:iam::{account.id}:user/admin"
    key = out.access_key
    assert (
        key.access_key_id.startswith("AKIA") and len(key.secret_access_key) == 40 and key.user_name == "admin"
    )

    conn = await asyncpg.connect(iam_stack.database_url)
    try:
        admin = await conn.fetchrow(
            "SELECT id, arn, unique_id FROM store.iam_principals WHERE account_id = $1 AND kind = 'user'",
            account.id,
        )
        policy = await conn.fetchrow(
            "SELECT policy_name, document FROM store.iam_policies WHERE principal_id = $1", admin["id"]
        )
        keys = await conn.fetch(
            "SELECT access_key_id, signing_key, status FROM store.iam_access_keys WHERE principal_id = $1",
            admin["id"],
        )
        created_by = await conn.fetchval(
            "SELECT created_by FROM store.iam_accounts WHERE account_id = $1", account.id
        )
    finally:
        await conn.close()
    assert admin["arn"] == out.admin_user_arn and admin["unique_id"].startswith("AIDA")
    assert policy["policy_name"] == "AdministratorAccess"
    assert json.loads(policy["document"])["Statement"][0] == {
        "Effect": "Allow",
        "Action": "*",
        "Resource": "*",
    }
    assert [(k["access_key_id"], bytes(k["signing_key"]), k["status"]) for k in keys] == [
        (key.access_key_id, derive_signing_key(key.secret_access_key), "Active")
    ]
    assert created_by == ROOT

    with pytest.raises(errors.DuplicateAccount):
        await orgs.create_account(account_name="again", email="TEAM-A@example.com")
    with pytest.raises(errors.IamValidation):
        await orgs.create_account(account_name="bad", email="not-an-email")
    await orgs.create_account(account_name="team-b", email="team-b@example.com")
    listed = await orgs.list_accounts()
    assert {a.name for a in listed.accounts} == {"root", "team-a", "team-b"}
    assert listed.accounts[0].id == ROOT  # ordered by id
    assert [a.id for a in listed.accounts] == sorted(a.id for a in listed.accounts)

    # A principal of the root account without organizations:CreateAccount is refused.
    service = iam_stack.client("service/rotation")
    try:
        with pytest.raises(errors.AccessDenied):
            await service.organizations.create_account(account_name="x", email="x@example.com")
    finally:
        await service.close()


async def test_every_change_notifies_coffer_iam(iam_stack: IamStack) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    conn = await asyncpg.connect(iam_stack.database_url)

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        received.put_nowait(json.loads(payload))

    await conn.add_listener("coffer_iam", on_notify)
    try:
        iam = iam_stack.admin.iam
        arn = f"arn:aws:iam::{ROOT}:user/alice"
        await iam.create_user(user_name="alice")
        assert await asyncio.wait_for(received.get(), 10) == {"access_key_ids": [], "principal_arns": [arn]}
        key = (await iam.create_access_key(user_name="alice")).access_key.access_key_id
        assert await asyncio.wait_for(received.get(), 10) == {
            "access_key_ids": [key],
            "principal_arns": [arn],
        }
        await iam.put_user_policy(user_name="alice", policy_name="read", policy_document=READ_POLICY)
        assert await asyncio.wait_for(received.get(), 10) == {
            "access_key_ids": [key],
            "principal_arns": [arn],
        }
        await iam.tag_user(user_name="alice", tags=[{"key": "team", "value": "a"}])
        assert await asyncio.wait_for(received.get(), 10) == {
            "access_key_ids": [key],
            "principal_arns": [arn],
        }
        await iam.update_access_key(user_name="alice", access_key_id=key, status="Inactive")
        assert await asyncio.wait_for(received.get(), 10) == {
            "access_key_ids": [key],
            "principal_arns": [arn],
        }
        await iam.delete_access_key(user_name="alice", access_key_id=key)
        assert await asyncio.wait_for(received.get(), 10) == {
            "access_key_ids": [key],
            "principal_arns": [arn],
        }
        # A refused change notifies nothing: the next notification is the policy's deletion.
        with pytest.raises(errors.DeleteConflict):
            await iam.delete_user(user_name="alice")
        await iam.delete_user_policy(user_name="alice", policy_name="read")
        assert await asyncio.wait_for(received.get(), 10) == {"access_key_ids": [], "principal_arns": [arn]}
        await iam.delete_user(user_name="alice")
        assert await asyncio.wait_for(received.get(), 10) == {"access_key_ids": [], "principal_arns": [arn]}
        assert received.empty()
    finally:
        await conn.close()
