"""The store's IAM servicers for callers other than the legacy admin (set as ``caller_var``, as the store's
interceptor will once callers sign with access keys), on the real store database: accounts are isolated,
only the root account creates accounts, and every call is decided by the caller's identity policies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from coffer.api.iam.v1 import iam_pb2 as pb
from coffer.core import errors
from coffer.core.policy import PolicyKind, parse_policy
from coffer.core.principal import Principal, PrincipalKind, admin_policy
from coffer.rpc.context import caller_var
from coffer.store.iam import (
    IamCore,
    IamRepository,
    IdentityManagementServicer,
    OrganizationsServicer,
    SecurityTokenServicer,
)

from .conftest import IamStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = "000000000000"
CTX: Any = None  # the servicers do not use the gRPC context


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = caller_var.set(principal)
    try:
        yield
    finally:
        caller_var.reset(token)


def admin_of(account: str) -> Principal:
    return Principal(
        arn=f"arn:aws:iam::{account}:user/admin",
        account=account,
        kind=PrincipalKind.USER,
        name="admin",
        policies=(admin_policy(),),
    )


async def test_accounts_are_isolated_and_only_the_root_account_creates_accounts(iam_stack: IamStack) -> None:
    core = IamCore(IamRepository(iam_stack.store.pool), secrets=iam_stack.store.access_key_secrets)
    iam, orgs, sts = (
        IdentityManagementServicer(core),
        OrganizationsServicer(core),
        SecurityTokenServicer(core),
    )

    with acting_as(admin_of(ROOT)):
        made = await orgs.CreateAccount(
            pb.CreateAccountRequest(account_name="team-a", email="a@example.com"), CTX
        )
    account = made.account.id
    new_admin = admin_of(account)

    with acting_as(new_admin):
        # The new account's admin exists, with its key and AdministratorAccess.
        me = (await iam.GetUser(pb.GetUserRequest(), CTX)).user
        assert me.arn == made.admin_user_arn
        keys = await iam.ListAccessKeys(pb.ListAccessKeysRequest(), CTX)
        assert [k.access_key_id for k in keys.access_key_metadata] == [made.access_key.access_key_id]
        policies = await iam.ListUserPolicies(pb.ListUserPoliciesRequest(user_name="admin"), CTX)
        assert list(policies.policy_names) == ["AdministratorAccess"]
        ident = await sts.GetCallerIdentity(pb.GetCallerIdentityRequest(), CTX)
        assert (ident.account, ident.user_id) == (account, me.user_id)

        # It manages its own account only.
        await iam.CreateUser(pb.CreateUserRequest(user_name="alice"), CTX)
        assert [u.arn for u in (await iam.ListUsers(pb.ListUsersRequest(), CTX)).users] == [
            f"arn:aws:iam::{account}:user/admin",
            f"arn:aws:iam::{account}:user/alice",
        ]
        # Only principals of the root account create or list accounts.
        with pytest.raises(errors.AccessDenied, match="root account"):
            await orgs.CreateAccount(pb.CreateAccountRequest(account_name="b", email="b@example.com"), CTX)
        with pytest.raises(errors.AccessDenied):
            await orgs.ListAccounts(pb.ListAccountsRequest(), CTX)

    with acting_as(admin_of(ROOT)):
        # the root account holds only its bootstrap users, not the other account's alice
        assert [u.user_name for u in (await iam.ListUsers(pb.ListUsersRequest(), CTX)).users] == [
            "admin",
            "coffer-rotation",
        ]
        with pytest.raises(errors.NoSuchEntity):
            await iam.GetUser(pb.GetUserRequest(user_name="alice"), CTX)
        await iam.CreateUser(pb.CreateUserRequest(user_name="alice"), CTX)  # same name, another account


async def test_calls_are_decided_by_the_callers_identity_policies(iam_stack: IamStack) -> None:
    core = IamCore(IamRepository(iam_stack.store.pool), secrets=iam_stack.store.access_key_secrets)
    iam, orgs = IdentityManagementServicer(core), OrganizationsServicer(core)
    reader = Principal(
        arn=f"arn:aws:iam::{ROOT}:user/reader",
        account=ROOT,
        kind=PrincipalKind.USER,
        name="reader",
        policies=(
            parse_policy(
                json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Action": ["iam:Get*", "iam:List*"], "Resource": "*"},
                            {
                                "Effect": "Allow",
                                "Action": "iam:CreateAccessKey",
                                "Resource": "arn:aws:iam::*:user/${aws:username}",
                            },
                        ],
                    }
                ),
                PolicyKind.IDENTITY,
            ),
        ),
    )
    with acting_as(admin_of(ROOT)):
        await iam.CreateUser(pb.CreateUserRequest(user_name="reader"), CTX)
        await iam.CreateUser(pb.CreateUserRequest(user_name="other"), CTX)
    with acting_as(reader):
        assert [u.user_name for u in (await iam.ListUsers(pb.ListUsersRequest(), CTX)).users] == [
            "admin",
            "coffer-rotation",
            "other",
            "reader",
        ]
        with pytest.raises(errors.AccessDenied) as denied:
            await iam.CreateUser(pb.CreateUserRequest(user_name="mallory"), CTX)
        assert denied.value.message.startswith(
            f"User: arn:aws:iam::{ROOT}:user/reader is not authorized to perform: iam:CreateUser "
            f"on resource: arn:aws:iam::{ROOT}:user/mallory"
        )
        own = await iam.CreateAccessKey(pb.CreateAccessKeyRequest(), CTX)  # its own key: allowed
        assert own.access_key.user_name == "reader"
        with pytest.raises(errors.AccessDenied):
            await iam.CreateAccessKey(pb.CreateAccessKeyRequest(user_name="other"), CTX)
        with pytest.raises(errors.AccessDenied):
            await orgs.CreateAccount(pb.CreateAccountRequest(account_name="x", email="x@example.com"), CTX)


async def test_calls_on_an_entity_are_decided_on_its_arn_with_its_path(iam_stack: IamStack) -> None:
    core = IamCore(IamRepository(iam_stack.store.pool), secrets=iam_stack.store.access_key_secrets)
    iam = IdentityManagementServicer(core)
    team_reader = Principal(
        arn=f"arn:aws:iam::{ROOT}:user/team/lead",
        account=ROOT,
        kind=PrincipalKind.USER,
        name="lead",
        policies=(
            parse_policy(
                json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": "iam:GetUser",
                                "Resource": f"arn:aws:iam::{ROOT}:user/team/*",
                            }
                        ],
                    }
                ),
                PolicyKind.IDENTITY,
            ),
        ),
    )
    with acting_as(admin_of(ROOT)):
        made = (await iam.CreateUser(pb.CreateUserRequest(user_name="dev", path="/team/"), CTX)).user
        assert made.arn == f"arn:aws:iam::{ROOT}:user/team/dev" and made.path == "/team/"
        await iam.CreateUser(pb.CreateUserRequest(user_name="ops"), CTX)
        listed = await iam.ListUsers(pb.ListUsersRequest(path_prefix="/team/"), CTX)
        assert [u.user_name for u in listed.users] == ["dev"]
    with acting_as(team_reader):
        assert (await iam.GetUser(pb.GetUserRequest(user_name="dev"), CTX)).user.arn == made.arn
        with pytest.raises(errors.AccessDenied):
            await iam.GetUser(pb.GetUserRequest(user_name="ops"), CTX)
        with pytest.raises(errors.AccessDenied):  # a user that does not exist is not revealed
            await iam.GetUser(pb.GetUserRequest(user_name="ghost"), CTX)
