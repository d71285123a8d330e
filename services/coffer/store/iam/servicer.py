"""``coffer.api.iam.v1``: IdentityManagementService, SecurityTokenService and OrganizationsService, served by
the store (the gateway forwards them unchanged). Every call is decided here with ``coffer.core.authorize``
for ``current_caller()``, inside the caller's own account; every change runs in one transaction that
NOTIFYs ``coffer_iam`` (see :mod:`coffer.store.iam.repository`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import grpc
from google.protobuf import timestamp_pb2

from coffer.api.iam.v1 import iam_pb2 as pb
from coffer.api.iam.v1 import iam_pb2_grpc
from coffer.clock import Clock, SystemClock
from coffer.core import errors
from coffer.core import iam as rules
from coffer.core.authorize import authorize
from coffer.core.principal import ADMIN_POLICY_TEXT, ROOT_ACCOUNT, Principal, PrincipalKind
from coffer.crypto import access_keys
from coffer.rpc.context import current_caller
from coffer.store.access_key_secrets import AccessKeySecrets
from coffer.store.iam.repository import IamRepository, IamTx, PrincipalRow

Ctx: TypeAlias = grpc.aio.ServicerContext
USER, ROLE = "user", "role"
ADMIN_USER = "admin"
ADMIN_POLICY_NAME = "AdministratorAccess"


def _caller() -> Principal:
    caller = current_caller()
    if caller is None:
        raise errors.Unauthenticated()
    return caller


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def _tags_in(tags: Iterable[pb.Tag]) -> dict[str, str]:
    return rules.check_tags([(t.key, t.value) for t in tags])


def _tags_out(tags: dict[str, str]) -> list[pb.Tag]:
    return [pb.Tag(key=k, value=v) for k, v in sorted(tags.items())]


def _user(row: PrincipalRow) -> pb.User:
    return pb.User(
        path=row.path,
        user_name=row.name,
        user_id=row.unique_id,
        arn=row.arn,
        create_date=_ts(row.created_at),
        tags=_tags_out(row.tags),
    )


def _role(row: PrincipalRow) -> pb.Role:
    out = pb.Role(
        path=row.path,
        role_name=row.name,
        role_id=row.unique_id,
        arn=row.arn,
        create_date=_ts(row.created_at),
        assume_role_policy_document=row.trust_policy or "",
        max_session_duration=row.max_session_seconds,
        tags=_tags_out(row.tags),
    )
    if row.description is not None:
        out.description = row.description
    return out


def encode_marker(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode("utf-8")).decode("ascii")


def decode_marker(marker: str | None) -> str | None:
    if not marker:
        return None
    try:
        return base64.b64decode(marker.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
    except (ValueError, UnicodeError, binascii.Error):
        raise errors.IamValidation("Invalid Marker.") from None


def _page(items: Sequence[Any], limit: int, key: Any) -> tuple[Sequence[Any], str | None]:
    """The first ``limit`` of ``items`` (fetched ``limit + 1``) and the marker of the next page."""
    if len(items) > limit:
        return items[:limit], encode_marker(key(items[limit - 1]))
    return items, None


def _no_user(name: str) -> errors.NoSuchEntity:
    return errors.NoSuchEntity(f"The user with name {name} cannot be found.")


def _no_role(name: str) -> errors.NoSuchEntity:
    return errors.NoSuchEntity(f"The role with name {name} cannot be found.")


class IamCore:
    """The transactions the three services share (account creation makes a user, a policy and a key)."""

    def __init__(self, repo: IamRepository, *, secrets: AccessKeySecrets, clock: Clock | None = None) -> None:
        self.repo = repo
        #: Seals every new key's secret access key into its row (the AWS endpoint verifies SigV4 with it).
        self.secrets = secrets
        self.clock: Clock = clock or SystemClock()

    async def key_ids(self, tx: IamTx, principal_id: int) -> list[str]:
        rows = await tx.conn.fetch(
            "SELECT access_key_id FROM store.iam_access_keys WHERE principal_id = $1", principal_id
        )
        return [r["access_key_id"] for r in rows]

    async def changed(self, tx: IamTx, row: PrincipalRow, *extra_keys: str) -> None:
        """NOTIFY: ``row``'s ARN and every access key (and session) of it changed."""
        await tx.notify(
            access_key_ids=[*await self.key_ids(tx, row.id), *extra_keys], principal_arns=[row.arn]
        )

    async def create_user(
        self, tx: IamTx, account: str, name: str, path: str, tags: dict[str, str]
    ) -> PrincipalRow:
        row = await tx.insert_principal(
            account=account,
            kind=USER,
            name=name,
            path=path,
            unique_id=rules.new_unique_id("AIDA"),
            arn=rules.user_arn(account, name, path),
            tags=tags,
        )
        if row is None:
            raise errors.EntityAlreadyExists(f"User with name {name} already exists.")
        await tx.notify(principal_arns=[row.arn])
        return row

    async def create_access_key(self, tx: IamTx, user: PrincipalRow) -> pb.AccessKey:
        if len(await tx.user_keys(user.id)) >= rules.MAX_ACCESS_KEYS_PER_USER:
            raise errors.IamLimitExceeded(
                f"Cannot exceed quota for AccessKeysPerUser: {rules.MAX_ACCESS_KEYS_PER_USER}"
            )
        key_id = access_keys.new_access_key_id()
        secret = access_keys.new_secret_access_key()
        # Sealed inside the transaction: a KMS failure rolls it back, so no key exists without its secret —
        # unless the KMS is sealed: operators need keys to unseal it (such a key cannot sign SigV4).
        sealed = await self.secrets.seal_unless_kms_sealed(key_id, secret)
        created = await tx.insert_access_key(key_id, user.id, access_keys.derive_signing_key(secret), sealed)
        await tx.notify(access_key_ids=[key_id], principal_arns=[user.arn])
        return pb.AccessKey(
            user_name=user.name,
            access_key_id=key_id,
            status="Active",
            secret_access_key=secret,
            create_date=_ts(created),
        )


class IdentityManagementServicer(iam_pb2_grpc.IdentityManagementServiceServicer):
    def __init__(self, core: IamCore) -> None:
        self._core = core
        self._repo = core.repo

    # -- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _authorize(caller: Principal, action: str, kind: str, name: str | None, path: str = "/") -> None:
        """Decide ``iam:<action>`` on the user or role ARN ``name`` and ``path`` give (``*`` without a
        name)."""
        if name is None:
            resource = "*"
        elif kind == USER:
            resource = rules.user_arn(caller.account, name, path)
        else:
            resource = rules.role_arn(caller.account, name, path)
        authorize(caller, f"iam:{action}", resource, resource_account=caller.account)

    @staticmethod
    def _self_user(caller: Principal, name: str | None) -> str:
        """The user a call names, or the calling user when it names none (IAM's rule for keys, GetUser)."""
        if name is not None:
            return rules.check_name(name, "userName")
        if caller.kind is not PrincipalKind.USER:
            raise errors.IamValidation("Must specify userName when calling with non-User credentials")
        return caller.name

    async def _get(
        self, tx: IamTx, caller: Principal, action: str, kind: str, name: str, *, lock: bool = False
    ) -> PrincipalRow:
        """The user or role ``name`` of the caller's account, once ``iam:<action>`` on it is allowed: decided
        on its real ARN (with its path) when it exists, else on the ARN a ``/`` path gives (so a caller that
        is not allowed learns nothing of its existence)."""
        row = await tx.principal(caller.account, kind, name, lock=lock)
        if row is None:
            self._authorize(caller, action, kind, name)
            raise _no_user(name) if kind == USER else _no_role(name)
        authorize(caller, f"iam:{action}", row.arn, resource_account=caller.account)
        return row

    # -- users ------------------------------------------------------------------------------------------

    async def CreateUser(self, request: pb.CreateUserRequest, context: Ctx) -> pb.CreateUserResponse:
        caller = _caller()
        name = rules.check_name(request.user_name, "userName")
        path = rules.check_path(_opt(request, "path"))
        tags = _tags_in(request.tags)
        self._authorize(caller, "CreateUser", USER, name, path)
        async with self._repo.transaction() as tx:
            row = await self._core.create_user(tx, caller.account, name, path, tags)
        return pb.CreateUserResponse(user=_user(row))

    async def GetUser(self, request: pb.GetUserRequest, context: Ctx) -> pb.GetUserResponse:
        caller = _caller()
        name = self._self_user(caller, _opt(request, "user_name"))
        async with self._repo.read() as tx:
            row = await self._get(tx, caller, "GetUser", USER, name)
        return pb.GetUserResponse(user=_user(row))

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: Ctx) -> pb.DeleteUserResponse:
        caller = _caller()
        name = rules.check_name(request.user_name, "userName")
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, "DeleteUser", USER, name, lock=True)
            if await tx.user_keys(row.id):
                raise errors.DeleteConflict("Cannot delete entity, must delete access keys first.")
            if await tx.policy_count(row.id):
                raise errors.DeleteConflict("Cannot delete entity, must delete policies first.")
            keys = await tx.delete_principal(row.id)
            await tx.notify(access_key_ids=keys, principal_arns=[row.arn])
        return pb.DeleteUserResponse()

    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        caller = _caller()
        limit = rules.check_max_items(_opt(request, "max_items"))
        after = decode_marker(_opt(request, "marker"))
        prefix = rules.check_path_prefix(_opt(request, "path_prefix"))
        self._authorize(caller, "ListUsers", USER, None)
        async with self._repo.read() as tx:
            rows = await tx.list_principals(caller.account, USER, prefix, after, limit + 1)
        page, marker = _page(rows, limit, lambda r: r.name.lower())
        resp = pb.ListUsersResponse(users=[_user(r) for r in page], is_truncated=marker is not None)
        if marker is not None:
            resp.marker = marker
        return resp

    async def _retag(
        self, kind: str, action: str, name: str, tags: dict[str, str] | None, keys: Sequence[str]
    ) -> None:
        caller = _caller()
        field = "userName" if kind == USER else "roleName"
        rules.check_name(name, field)
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, action, kind, name, lock=True)
            new = rules.merge_tags(row.tags, tags) if tags is not None else rules.remove_tags(row.tags, keys)
            await tx.set_tags(row.id, new)
            await self._core.changed(tx, row)

    async def TagUser(self, request: pb.TagUserRequest, context: Ctx) -> pb.TagUserResponse:
        await self._retag(USER, "TagUser", request.user_name, _tags_in(request.tags), ())
        return pb.TagUserResponse()

    async def UntagUser(self, request: pb.UntagUserRequest, context: Ctx) -> pb.UntagUserResponse:
        await self._retag(USER, "UntagUser", request.user_name, None, list(request.tag_keys))
        return pb.UntagUserResponse()

    async def ListUserTags(self, request: pb.ListUserTagsRequest, context: Ctx) -> pb.ListUserTagsResponse:
        caller = _caller()
        name = rules.check_name(request.user_name, "userName")
        limit = rules.check_max_items(_opt(request, "max_items"))
        after = decode_marker(_opt(request, "marker"))
        async with self._repo.read() as tx:
            row = await self._get(tx, caller, "ListUserTags", USER, name)
        items = [(k, v) for k, v in sorted(row.tags.items()) if after is None or k > after]
        page, marker = _page(items, limit, lambda kv: kv[0])
        resp = pb.ListUserTagsResponse(
            tags=[pb.Tag(key=k, value=v) for k, v in page], is_truncated=marker is not None
        )
        if marker is not None:
            resp.marker = marker
        return resp

    # -- roles ------------------------------------------------------------------------------------------

    async def CreateRole(self, request: pb.CreateRoleRequest, context: Ctx) -> pb.CreateRoleResponse:
        caller = _caller()
        name = rules.check_name(request.role_name, "roleName")
        path = rules.check_path(_opt(request, "path"))
        max_session = rules.check_max_session(_opt(request, "max_session_duration"))
        tags = _tags_in(request.tags)
        description = _opt(request, "description")
        if description is not None and len(description) > 1000:
            raise errors.IamValidation(
                "1 validation error detected: Value at 'description' failed to satisfy constraint: "
                "Member must have length less than or equal to 1000"
            )
        rules.trust_policy(request.assume_role_policy_document)
        self._authorize(caller, "CreateRole", ROLE, name, path)
        async with self._repo.transaction() as tx:
            row = await tx.insert_principal(
                account=caller.account,
                kind=ROLE,
                name=name,
                path=path,
                unique_id=rules.new_unique_id("AROA"),
                arn=rules.role_arn(caller.account, name, path),
                tags=tags,
                trust_policy=request.assume_role_policy_document,
                max_session_seconds=max_session,
                description=description,
            )
            if row is None:
                raise errors.EntityAlreadyExists(f"Role with name {name} already exists.")
            await tx.notify(principal_arns=[row.arn])
        return pb.CreateRoleResponse(role=_role(row))

    async def GetRole(self, request: pb.GetRoleRequest, context: Ctx) -> pb.GetRoleResponse:
        caller = _caller()
        name = rules.check_name(request.role_name, "roleName")
        async with self._repo.read() as tx:
            row = await self._get(tx, caller, "GetRole", ROLE, name)
        return pb.GetRoleResponse(role=_role(row))

    async def DeleteRole(self, request: pb.DeleteRoleRequest, context: Ctx) -> pb.DeleteRoleResponse:
        caller = _caller()
        name = rules.check_name(request.role_name, "roleName")
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, "DeleteRole", ROLE, name, lock=True)
            if await tx.policy_count(row.id):
                raise errors.DeleteConflict("Cannot delete entity, must delete policies first.")
            keys = await tx.delete_principal(row.id)  # the role's live sessions end with it
            await tx.notify(access_key_ids=keys, principal_arns=[row.arn])
        return pb.DeleteRoleResponse()

    async def ListRoles(self, request: pb.ListRolesRequest, context: Ctx) -> pb.ListRolesResponse:
        caller = _caller()
        limit = rules.check_max_items(_opt(request, "max_items"))
        after = decode_marker(_opt(request, "marker"))
        prefix = rules.check_path_prefix(_opt(request, "path_prefix"))
        self._authorize(caller, "ListRoles", ROLE, None)
        async with self._repo.read() as tx:
            rows = await tx.list_principals(caller.account, ROLE, prefix, after, limit + 1)
        page, marker = _page(rows, limit, lambda r: r.name.lower())
        resp = pb.ListRolesResponse(roles=[_role(r) for r in page], is_truncated=marker is not None)
        if marker is not None:
            resp.marker = marker
        return resp

    async def TagRole(self, request: pb.TagRoleRequest, context: Ctx) -> pb.TagRoleResponse:
        await self._retag(ROLE, "TagRole", request.role_name, _tags_in(request.tags), ())
        return pb.TagRoleResponse()

    async def UntagRole(self, request: pb.UntagRoleRequest, context: Ctx) -> pb.UntagRoleResponse:
        await self._retag(ROLE, "UntagRole", request.role_name, None, list(request.tag_keys))
        return pb.UntagRoleResponse()

    async def UpdateAssumeRolePolicy(
        self, request: pb.UpdateAssumeRolePolicyRequest, context: Ctx
    ) -> pb.UpdateAssumeRolePolicyResponse:
        caller = _caller()
        name = rules.check_name(request.role_name, "roleName")
        rules.trust_policy(request.policy_document)
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, "UpdateAssumeRolePolicy", ROLE, name, lock=True)
            await tx.set_trust_policy(row.id, request.policy_document)
            await tx.notify(principal_arns=[row.arn])
        return pb.UpdateAssumeRolePolicyResponse()

    # -- inline policies --------------------------------------------------------------------------------

    async def _put_policy(self, kind: str, name: str, policy_name: str, document: str) -> None:
        caller = _caller()
        action = "PutUserPolicy" if kind == USER else "PutRolePolicy"
        rules.check_name(name, "userName" if kind == USER else "roleName")
        rules.check_name(policy_name, "policyName", rules.POLICY_NAME_MAX)
        limit = rules.USER_POLICY_MAX if kind == USER else rules.ROLE_POLICY_MAX
        rules.identity_policy(document, policy_name, max_size=limit)
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, action, kind, name, lock=True)
            size = rules.iam_size(document) + await tx.other_policies_size(row.id, policy_name)
            if size > limit:
                raise errors.IamLimitExceeded(
                    f"Maximum policy size of {limit} bytes exceeded for {kind} {row.name}"
                )
            await tx.put_policy(row.id, policy_name, document)
            await self._core.changed(tx, row)

    async def _get_policy(self, kind: str, name: str, policy_name: str) -> tuple[str, str, str]:
        caller = _caller()
        rules.check_name(name, "userName" if kind == USER else "roleName")
        rules.check_name(policy_name, "policyName", rules.POLICY_NAME_MAX)
        async with self._repo.read() as tx:
            row = await self._get(
                tx, caller, "GetUserPolicy" if kind == USER else "GetRolePolicy", kind, name
            )
            found = await tx.policy(row.id, policy_name)
        if found is None:
            raise errors.NoSuchEntity(f"The {kind} policy with name {policy_name} cannot be found.")
        return row.name, found[0], found[1]

    async def _delete_policy(self, kind: str, name: str, policy_name: str) -> None:
        caller = _caller()
        rules.check_name(name, "userName" if kind == USER else "roleName")
        rules.check_name(policy_name, "policyName", rules.POLICY_NAME_MAX)
        async with self._repo.transaction() as tx:
            row = await self._get(
                tx, caller, "DeleteUserPolicy" if kind == USER else "DeleteRolePolicy", kind, name, lock=True
            )
            if not await tx.delete_policy(row.id, policy_name):
                raise errors.NoSuchEntity(f"The {kind} policy with name {policy_name} cannot be found.")
            await self._core.changed(tx, row)

    async def _list_policies(
        self, kind: str, name: str, marker: str | None, max_items: int | None
    ) -> tuple[Sequence[str], str | None]:
        caller = _caller()
        rules.check_name(name, "userName" if kind == USER else "roleName")
        limit = rules.check_max_items(max_items)
        after = decode_marker(marker)
        async with self._repo.read() as tx:
            row = await self._get(
                tx, caller, "ListUserPolicies" if kind == USER else "ListRolePolicies", kind, name
            )
            names = await tx.policy_names(row.id, after, limit + 1)
        return _page(names, limit, lambda n: n)

    async def PutUserPolicy(self, request: pb.PutUserPolicyRequest, context: Ctx) -> pb.PutUserPolicyResponse:
        await self._put_policy(USER, request.user_name, request.policy_name, request.policy_document)
        return pb.PutUserPolicyResponse()

    async def GetUserPolicy(self, request: pb.GetUserPolicyRequest, context: Ctx) -> pb.GetUserPolicyResponse:
        user, name, doc = await self._get_policy(USER, request.user_name, request.policy_name)
        return pb.GetUserPolicyResponse(user_name=user, policy_name=name, policy_document=doc)

    async def DeleteUserPolicy(
        self, request: pb.DeleteUserPolicyRequest, context: Ctx
    ) -> pb.DeleteUserPolicyResponse:
        await self._delete_policy(USER, request.user_name, request.policy_name)
        return pb.DeleteUserPolicyResponse()

    async def ListUserPolicies(
        self, request: pb.ListUserPoliciesRequest, context: Ctx
    ) -> pb.ListUserPoliciesResponse:
        names, marker = await self._list_policies(
            USER, request.user_name, _opt(request, "marker"), _opt(request, "max_items")
        )
        resp = pb.ListUserPoliciesResponse(policy_names=names, is_truncated=marker is not None)
        if marker is not None:
            resp.marker = marker
        return resp

    async def PutRolePolicy(self, request: pb.PutRolePolicyRequest, context: Ctx) -> pb.PutRolePolicyResponse:
        await self._put_policy(ROLE, request.role_name, request.policy_name, request.policy_document)
        return pb.PutRolePolicyResponse()

    async def GetRolePolicy(self, request: pb.GetRolePolicyRequest, context: Ctx) -> pb.GetRolePolicyResponse:
        role, name, doc = await self._get_policy(ROLE, request.role_name, request.policy_name)
        return pb.GetRolePolicyResponse(role_name=role, policy_name=name, policy_document=doc)

    async def DeleteRolePolicy(
        self, request: pb.DeleteRolePolicyRequest, context: Ctx
    ) -> pb.DeleteRolePolicyResponse:
        await self._delete_policy(ROLE, request.role_name, request.policy_name)
        return pb.DeleteRolePolicyResponse()

    async def ListRolePolicies(
        self, request: pb.ListRolePoliciesRequest, context: Ctx
    ) -> pb.ListRolePoliciesResponse:
        names, marker = await self._list_policies(
            ROLE, request.role_name, _opt(request, "marker"), _opt(request, "max_items")
        )
        resp = pb.ListRolePoliciesResponse(policy_names=names, is_truncated=marker is not None)
        if marker is not None:
            resp.marker = marker
        return resp

    # -- access keys ------------------------------------------------------------------------------------

    async def CreateAccessKey(
        self, request: pb.CreateAccessKeyRequest, context: Ctx
    ) -> pb.CreateAccessKeyResponse:
        caller = _caller()
        name = self._self_user(caller, _opt(request, "user_name"))
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, "CreateAccessKey", USER, name, lock=True)
            key = await self._core.create_access_key(tx, row)
        return pb.CreateAccessKeyResponse(access_key=key)

    async def ListAccessKeys(
        self, request: pb.ListAccessKeysRequest, context: Ctx
    ) -> pb.ListAccessKeysResponse:
        caller = _caller()
        name = self._self_user(caller, _opt(request, "user_name"))
        limit = rules.check_max_items(_opt(request, "max_items"))
        after = decode_marker(_opt(request, "marker"))
        async with self._repo.read() as tx:
            row = await self._get(tx, caller, "ListAccessKeys", USER, name)
            keys = [k for k in await tx.user_keys(row.id) if after is None or k.access_key_id > after]
        keys.sort(key=lambda k: k.access_key_id)
        page, marker = _page(keys, limit, lambda k: k.access_key_id)
        resp = pb.ListAccessKeysResponse(
            access_key_metadata=[
                pb.AccessKeyMetadata(
                    user_name=row.name,
                    access_key_id=k.access_key_id,
                    status=k.status,
                    create_date=_ts(k.created_at),
                )
                for k in page
            ],
            is_truncated=marker is not None,
        )
        if marker is not None:
            resp.marker = marker
        return resp

    async def UpdateAccessKey(
        self, request: pb.UpdateAccessKeyRequest, context: Ctx
    ) -> pb.UpdateAccessKeyResponse:
        caller = _caller()
        name = self._self_user(caller, _opt(request, "user_name"))
        status = rules.check_access_key_status(request.status)
        rules.check_access_key_id(request.access_key_id)
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, "UpdateAccessKey", USER, name, lock=True)
            if not await tx.set_key_status(row.id, request.access_key_id, status):
                raise errors.NoSuchEntity(f"The Access Key with id {request.access_key_id} cannot be found.")
            await tx.notify(access_key_ids=[request.access_key_id], principal_arns=[row.arn])
        return pb.UpdateAccessKeyResponse()

    async def DeleteAccessKey(
        self, request: pb.DeleteAccessKeyRequest, context: Ctx
    ) -> pb.DeleteAccessKeyResponse:
        caller = _caller()
        name = self._self_user(caller, _opt(request, "user_name"))
        rules.check_access_key_id(request.access_key_id)
        async with self._repo.transaction() as tx:
            row = await self._get(tx, caller, "DeleteAccessKey", USER, name, lock=True)
            if not await tx.delete_key(row.id, request.access_key_id):
                raise errors.NoSuchEntity(f"The Access Key with id {request.access_key_id} cannot be found.")
            await tx.notify(access_key_ids=[request.access_key_id], principal_arns=[row.arn])
        return pb.DeleteAccessKeyResponse()


class SecurityTokenServicer(iam_pb2_grpc.SecurityTokenServiceServicer):
    def __init__(self, core: IamCore) -> None:
        self._core = core
        self._repo = core.repo

    async def GetCallerIdentity(
        self, request: pb.GetCallerIdentityRequest, context: Ctx
    ) -> pb.GetCallerIdentityResponse:
        """Needs no permission (as on AWS)."""
        caller = _caller()
        user_id = caller.unique_id
        if not user_id and caller.kind is PrincipalKind.USER:
            async with self._repo.read() as tx:
                row = await tx.principal(caller.account, USER, caller.name)
            user_id = row.unique_id if row is not None else ""
        if not user_id:
            user_id = caller.account if caller.kind is PrincipalKind.ACCOUNT else caller.name
        return pb.GetCallerIdentityResponse(user_id=user_id, account=caller.account, arn=caller.arn)

    async def AssumeRole(self, request: pb.AssumeRoleRequest, context: Ctx) -> pb.AssumeRoleResponse:
        caller = _caller()
        ref = rules.parse_role_arn(request.role_arn)
        session = rules.check_session_name(request.role_session_name)
        tags = _tags_in(request.tags)
        requested = _opt(request, "duration_seconds")
        if requested is not None and requested > rules.SESSION_MAX_SECONDS:
            raise errors.IamValidation(
                f"1 validation error detected: Value '{requested}' at 'durationSeconds' failed to satisfy "
                f"constraint: Member must have value less than or equal to {rules.SESSION_MAX_SECONDS}"
            )
        denied = errors.AccessDenied(
            f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on resource: {ref.arn}"
        )
        async with self._repo.transaction() as tx:
            role = await tx.principal(ref.account, ROLE, ref.name)
            if role is None or role.trust_policy is None or role.arn.lower() != ref.arn.lower():
                raise denied  # as AWS: a missing role (or one at another path) is not revealed
            try:
                trust = rules.trust_policy(role.trust_policy)
            except errors.CofferError:
                raise denied from None
            rules.may_assume(caller, rules.RoleRef(ref.account, role.name, role.arn), trust)
            duration = rules.session_duration(requested, role.max_session_seconds)
            key_id = access_keys.new_access_key_id(access_keys.SESSION_PREFIX)
            secret = access_keys.new_secret_access_key()
            token = access_keys.new_session_token()
            expires = self._core.clock.now().astimezone(dt.UTC) + dt.timedelta(seconds=duration)
            await tx.insert_access_key(
                key_id,
                role.id,
                access_keys.derive_signing_key(secret),
                await self._core.secrets.seal(key_id, secret),
                session_name=session,
                token_sha256=access_keys.token_digest(token),
                expires_at=expires,
                session_tags=tags,
            )
            await tx.notify(access_key_ids=[key_id])
        return pb.AssumeRoleResponse(
            credentials=pb.Credentials(
                access_key_id=key_id, secret_access_key=secret, session_token=token, expiration=_ts(expires)
            ),
            assumed_role_user=pb.AssumedRoleUser(
                assumed_role_id=f"{role.unique_id}:{session}",
                arn=rules.session_arn(ref.account, role.name, session),
            ),
        )


def _account_pb(account_id: str, name: str, email: str | None, joined: dt.datetime) -> pb.Account:
    return pb.Account(
        id=account_id,
        arn=rules.account_arn(account_id),
        name=name,
        email=email or "",
        status="ACTIVE",
        joined_timestamp=_ts(joined),
    )


class OrganizationsServicer(iam_pb2_grpc.OrganizationsServiceServicer):
    def __init__(self, core: IamCore) -> None:
        self._core = core
        self._repo = core.repo

    @staticmethod
    def _root_only(caller: Principal, action: str) -> None:
        if caller.account != ROOT_ACCOUNT:
            raise errors.AccessDenied(
                f"User: {caller.arn} is not authorized to perform: {action} on resource: * "
                f"(only principals of the root account {ROOT_ACCOUNT} manage accounts)"
            )
        authorize(caller, action, "*", resource_account=ROOT_ACCOUNT)

    async def CreateAccount(self, request: pb.CreateAccountRequest, context: Ctx) -> pb.CreateAccountResponse:
        caller = _caller()
        name = request.account_name
        if not 1 <= len(name) <= rules.ACCOUNT_NAME_MAX or not name.isprintable():
            raise errors.IamValidation(
                "1 validation error detected: Value at 'accountName' failed to satisfy constraint: "
                f"Member must have length between 1 and {rules.ACCOUNT_NAME_MAX} printable characters"
            )
        if not rules.EMAIL_RE.fullmatch(request.email):
            raise errors.IamValidation(
                f"1 validation error detected: Value '{request.email}' at 'email' failed to satisfy "
                "constraint: Member must be an email address"
            )
        self._root_only(caller, "organizations:CreateAccount")
        async with self._repo.transaction() as tx:
            if await tx.account_with_email(request.email) is not None:
                raise errors.DuplicateAccount(f"An account with the email {request.email} already exists.")
            while True:
                account_id = rules.new_account_id()
                if await tx.insert_account(account_id, name, request.email, caller.account):
                    break
            joined = await tx.account(account_id)
            assert joined is not None
            admin = await self._core.create_user(tx, account_id, ADMIN_USER, "/", {})
            await tx.put_policy(admin.id, ADMIN_POLICY_NAME, ADMIN_POLICY_TEXT)
            key = await self._core.create_access_key(tx, admin)
        return pb.CreateAccountResponse(
            account=_account_pb(account_id, name, request.email, joined.created_at),
            admin_user_name=admin.name,
            admin_user_arn=admin.arn,
            access_key=key,
        )

    async def ListAccounts(self, request: pb.ListAccountsRequest, context: Ctx) -> pb.ListAccountsResponse:
        caller = _caller()
        limit = _opt(request, "max_results") or 20
        if not 1 <= limit <= 20:
            raise errors.IamValidation(
                "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: "
                "Member must have value between 1 and 20"
            )
        after = decode_marker(_opt(request, "next_token"))
        self._root_only(caller, "organizations:ListAccounts")
        async with self._repo.read() as tx:
            rows = await tx.list_accounts(after, limit + 1)
        page, token = _page(rows, limit, lambda a: a.account_id)
        resp = pb.ListAccountsResponse(
            accounts=[_account_pb(a.account_id, a.name, a.email, a.created_at) for a in page]
        )
        if token is not None:
            resp.next_token = token
        return resp
