"""The asynchronous Python SDK: ``AsyncCofferClient``.

Methods are the operations in snake_case (``create_secret``, ``get_secret_value``, ...; key operations on
``client.kms``). Their keyword arguments are the request fields (snake_case proto field names, e.g.
``secret_id=``, ``version_stage=``, ``tags=[{"key": "a", "value": "b"}]``) and they **return the response
protobuf messages** (``coffer.api.secrets.v1.secrets_pb2`` / ``coffer.api.kms.v1.kms_pb2``). Failures raise
``coffer.core.errors.CofferError`` subclasses whose ``code`` is the AWS error name. Like boto3,
``client_request_token`` is filled with ``str(uuid4())`` for CreateSecret, PutSecretValue and UpdateSecret
when not given.

    async with AsyncCofferClient.from_env() as client:
        await client.create_secret(name="db/prod", secret_string="{...}")
        value = await client.get_secret_value(secret_id="db/prod")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from coffer.api.audit.v1 import audit_pb2
from coffer.api.iam.v1 import iam_pb2
from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client import _ops
from coffer.client.credentials import (
    CredentialProvider,
    Credentials,
    RefreshingProvider,
    as_provider,
    current_credentials,
    signed_metadata,
)
from coffer.client.profile import Profile, load_profile, resolve_connection
from coffer.client.retry import RetryPolicy
from coffer.crypto.signing import EXPIRED_TOKEN_CODE

R = TypeVar("R", bound=Message)


class _AsyncService:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        service: ServiceDescriptor,
        timeout: float,
        endpoint: str,
        credentials: CredentialProvider | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._channel = channel
        self._credentials = credentials
        self._endpoint = endpoint
        self._service = service
        self._timeout = timeout
        self._retry = retry if retry is not None else RetryPolicy()
        self._callables: dict[str, Any] = {}

    async def call(self, operation: str, request: Message | None = None, /, **fields: Any) -> Message:
        """Call ``operation`` (its AWS name, e.g. ``"GetSecretValue"``) with a request message or fields,
        retrying as the client's ``RetryPolicy`` says (each attempt signed afresh, the same request and
        ``client_request_token`` each time)."""
        op = _ops.operation(self._service, operation)
        msg = _ops.build_request(op, request, fields)  # the token is filled once, before any attempt
        callable_ = self._callables.get(operation)
        if callable_ is None:
            callable_ = self._channel.unary_unary(
                op.path,
                request_serializer=op.request_type.SerializeToString,
                response_deserializer=op.response_type.FromString,
            )
            self._callables[operation] = callable_
        provider = self._credentials
        run = self._retry.start(operation)
        refreshed = False
        while True:
            used = await current_credentials(provider) if provider is not None else None
            try:
                metadata = signed_metadata(used, op.path, msg) if used is not None else None
                response: Message = await callable_(msg, timeout=self._timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                error = _ops.map_rpc_error(exc, self._endpoint, operation)
                # A session refused as expired was refused before anything ran: a refreshing provider gets a
                # new one and the call is made once more (whatever the retry policy says).
                if (
                    not refreshed
                    and used is not None
                    and error.code == EXPIRED_TOKEN_CODE
                    and isinstance(provider, RefreshingProvider)
                ):
                    refreshed = True
                    await provider.expired(used)
                    continue
                delay = run.next_delay(error)
                if delay is None:
                    raise error from None
                await self._retry.async_sleep(delay)
                continue
            run.succeeded()
            return response

    async def _call(self, operation: str, response_type: type[R], fields: Mapping[str, Any]) -> R:
        response = await self.call(operation, **fields)
        if not isinstance(response, response_type):  # pragma: no cover - the descriptor decides the type
            raise TypeError(f"{operation} returned {type(response).__name__}")
        return response


class AsyncAuditClient(_AsyncService):
    """The audit trail (``coffer.api.audit.v1.AuditService``) through the gateway."""

    async def lookup_events(self, **fields: Any) -> audit_pb2.LookupEventsResponse:
        return await self._call("LookupEvents", audit_pb2.LookupEventsResponse, fields)

    async def get_digest_public_key(self, **fields: Any) -> audit_pb2.GetDigestPublicKeyResponse:
        return await self._call("GetDigestPublicKey", audit_pb2.GetDigestPublicKeyResponse, fields)

    async def export_trail(self, **fields: Any) -> audit_pb2.ExportTrailResponse:
        return await self._call("ExportTrail", audit_pb2.ExportTrailResponse, fields)


class AsyncKmsClient(_AsyncService):
    """Key operations (``coffer.api.kms.v1.KeyManagementService``) through the gateway."""

    async def create_key(self, **fields: Any) -> kms_pb2.CreateKeyResponse:
        return await self._call("CreateKey", kms_pb2.CreateKeyResponse, fields)

    async def describe_key(self, **fields: Any) -> kms_pb2.DescribeKeyResponse:
        return await self._call("DescribeKey", kms_pb2.DescribeKeyResponse, fields)

    async def list_keys(self, **fields: Any) -> kms_pb2.ListKeysResponse:
        return await self._call("ListKeys", kms_pb2.ListKeysResponse, fields)

    async def enable_key(self, **fields: Any) -> kms_pb2.EnableKeyResponse:
        return await self._call("EnableKey", kms_pb2.EnableKeyResponse, fields)

    async def disable_key(self, **fields: Any) -> kms_pb2.DisableKeyResponse:
        return await self._call("DisableKey", kms_pb2.DisableKeyResponse, fields)

    async def schedule_key_deletion(self, **fields: Any) -> kms_pb2.ScheduleKeyDeletionResponse:
        return await self._call("ScheduleKeyDeletion", kms_pb2.ScheduleKeyDeletionResponse, fields)

    async def cancel_key_deletion(self, **fields: Any) -> kms_pb2.CancelKeyDeletionResponse:
        return await self._call("CancelKeyDeletion", kms_pb2.CancelKeyDeletionResponse, fields)

    async def create_alias(self, **fields: Any) -> kms_pb2.CreateAliasResponse:
        return await self._call("CreateAlias", kms_pb2.CreateAliasResponse, fields)

    async def list_aliases(self, **fields: Any) -> kms_pb2.ListAliasesResponse:
        return await self._call("ListAliases", kms_pb2.ListAliasesResponse, fields)

    async def delete_alias(self, **fields: Any) -> kms_pb2.DeleteAliasResponse:
        return await self._call("DeleteAlias", kms_pb2.DeleteAliasResponse, fields)

    async def enable_key_rotation(self, **fields: Any) -> kms_pb2.EnableKeyRotationResponse:
        return await self._call("EnableKeyRotation", kms_pb2.EnableKeyRotationResponse, fields)

    async def disable_key_rotation(self, **fields: Any) -> kms_pb2.DisableKeyRotationResponse:
        return await self._call("DisableKeyRotation", kms_pb2.DisableKeyRotationResponse, fields)

    async def get_key_rotation_status(self, **fields: Any) -> kms_pb2.GetKeyRotationStatusResponse:
        return await self._call("GetKeyRotationStatus", kms_pb2.GetKeyRotationStatusResponse, fields)

    async def rotate_key_on_demand(self, **fields: Any) -> kms_pb2.RotateKeyOnDemandResponse:
        return await self._call("RotateKeyOnDemand", kms_pb2.RotateKeyOnDemandResponse, fields)

    async def generate_data_key(self, **fields: Any) -> kms_pb2.GenerateDataKeyResponse:
        return await self._call("GenerateDataKey", kms_pb2.GenerateDataKeyResponse, fields)

    async def encrypt(self, **fields: Any) -> kms_pb2.EncryptResponse:
        return await self._call("Encrypt", kms_pb2.EncryptResponse, fields)

    async def decrypt(self, **fields: Any) -> kms_pb2.DecryptResponse:
        return await self._call("Decrypt", kms_pb2.DecryptResponse, fields)

    async def get_key_policy(self, **fields: Any) -> kms_pb2.GetKeyPolicyResponse:
        return await self._call("GetKeyPolicy", kms_pb2.GetKeyPolicyResponse, fields)

    async def put_key_policy(self, **fields: Any) -> kms_pb2.PutKeyPolicyResponse:
        return await self._call("PutKeyPolicy", kms_pb2.PutKeyPolicyResponse, fields)


class AsyncIamClient(_AsyncService):
    """IAM operations (``coffer.api.iam.v1.IdentityManagementService``) through the gateway."""

    async def create_user(self, **fields: Any) -> iam_pb2.CreateUserResponse:
        return await self._call("CreateUser", iam_pb2.CreateUserResponse, fields)

    async def get_user(self, **fields: Any) -> iam_pb2.GetUserResponse:
        return await self._call("GetUser", iam_pb2.GetUserResponse, fields)

    async def delete_user(self, **fields: Any) -> iam_pb2.DeleteUserResponse:
        return await self._call("DeleteUser", iam_pb2.DeleteUserResponse, fields)

    async def list_users(self, **fields: Any) -> iam_pb2.ListUsersResponse:
        return await self._call("ListUsers", iam_pb2.ListUsersResponse, fields)

    async def tag_user(self, **fields: Any) -> iam_pb2.TagUserResponse:
        return await self._call("TagUser", iam_pb2.TagUserResponse, fields)

    async def untag_user(self, **fields: Any) -> iam_pb2.UntagUserResponse:
        return await self._call("UntagUser", iam_pb2.UntagUserResponse, fields)

    async def list_user_tags(self, **fields: Any) -> iam_pb2.ListUserTagsResponse:
        return await self._call("ListUserTags", iam_pb2.ListUserTagsResponse, fields)

    async def create_role(self, **fields: Any) -> iam_pb2.CreateRoleResponse:
        return await self._call("CreateRole", iam_pb2.CreateRoleResponse, fields)

    async def get_role(self, **fields: Any) -> iam_pb2.GetRoleResponse:
        return await self._call("GetRole", iam_pb2.GetRoleResponse, fields)

    async def delete_role(self, **fields: Any) -> iam_pb2.DeleteRoleResponse:
        return await self._call("DeleteRole", iam_pb2.DeleteRoleResponse, fields)

    async def list_roles(self, **fields: Any) -> iam_pb2.ListRolesResponse:
        return await self._call("ListRoles", iam_pb2.ListRolesResponse, fields)

    async def tag_role(self, **fields: Any) -> iam_pb2.TagRoleResponse:
        return await self._call("TagRole", iam_pb2.TagRoleResponse, fields)

    async def untag_role(self, **fields: Any) -> iam_pb2.UntagRoleResponse:
        return await self._call("UntagRole", iam_pb2.UntagRoleResponse, fields)

    async def update_assume_role_policy(self, **fields: Any) -> iam_pb2.UpdateAssumeRolePolicyResponse:
        return await self._call("UpdateAssumeRolePolicy", iam_pb2.UpdateAssumeRolePolicyResponse, fields)

    async def put_user_policy(self, **fields: Any) -> iam_pb2.PutUserPolicyResponse:
        return await self._call("PutUserPolicy", iam_pb2.PutUserPolicyResponse, fields)

    async def get_user_policy(self, **fields: Any) -> iam_pb2.GetUserPolicyResponse:
        return await self._call("GetUserPolicy", iam_pb2.GetUserPolicyResponse, fields)

    async def delete_user_policy(self, **fields: Any) -> iam_pb2.DeleteUserPolicyResponse:
        return await self._call("DeleteUserPolicy", iam_pb2.DeleteUserPolicyResponse, fields)

    async def list_user_policies(self, **fields: Any) -> iam_pb2.ListUserPoliciesResponse:
        return await self._call("ListUserPolicies", iam_pb2.ListUserPoliciesResponse, fields)

    async def put_role_policy(self, **fields: Any) -> iam_pb2.PutRolePolicyResponse:
        return await self._call("PutRolePolicy", iam_pb2.PutRolePolicyResponse, fields)

    async def get_role_policy(self, **fields: Any) -> iam_pb2.GetRolePolicyResponse:
        return await self._call("GetRolePolicy", iam_pb2.GetRolePolicyResponse, fields)

    async def delete_role_policy(self, **fields: Any) -> iam_pb2.DeleteRolePolicyResponse:
        return await self._call("DeleteRolePolicy", iam_pb2.DeleteRolePolicyResponse, fields)

    async def list_role_policies(self, **fields: Any) -> iam_pb2.ListRolePoliciesResponse:
        return await self._call("ListRolePolicies", iam_pb2.ListRolePoliciesResponse, fields)

    async def create_access_key(self, **fields: Any) -> iam_pb2.CreateAccessKeyResponse:
        return await self._call("CreateAccessKey", iam_pb2.CreateAccessKeyResponse, fields)

    async def list_access_keys(self, **fields: Any) -> iam_pb2.ListAccessKeysResponse:
        return await self._call("ListAccessKeys", iam_pb2.ListAccessKeysResponse, fields)

    async def update_access_key(self, **fields: Any) -> iam_pb2.UpdateAccessKeyResponse:
        return await self._call("UpdateAccessKey", iam_pb2.UpdateAccessKeyResponse, fields)

    async def delete_access_key(self, **fields: Any) -> iam_pb2.DeleteAccessKeyResponse:
        return await self._call("DeleteAccessKey", iam_pb2.DeleteAccessKeyResponse, fields)


class AsyncStsClient(_AsyncService):
    """STS operations (``coffer.api.iam.v1.SecurityTokenService``) through the gateway."""

    async def get_caller_identity(self, **fields: Any) -> iam_pb2.GetCallerIdentityResponse:
        return await self._call("GetCallerIdentity", iam_pb2.GetCallerIdentityResponse, fields)

    async def assume_role(self, **fields: Any) -> iam_pb2.AssumeRoleResponse:
        return await self._call("AssumeRole", iam_pb2.AssumeRoleResponse, fields)


class AsyncOrganizationsClient(_AsyncService):
    """Organizations operations (``coffer.api.iam.v1.OrganizationsService``) through the gateway."""

    async def create_account(self, **fields: Any) -> iam_pb2.CreateAccountResponse:
        return await self._call("CreateAccount", iam_pb2.CreateAccountResponse, fields)

    async def list_accounts(self, **fields: Any) -> iam_pb2.ListAccountsResponse:
        return await self._call("ListAccounts", iam_pb2.ListAccountsResponse, fields)


class AsyncCofferClient(_AsyncService):
    """Secrets Manager operations through the gateway; ``.kms`` for key operations.

    Failed calls are retried as ``coffer.client.retry`` says: ``max_attempts`` (default 3; 1 = no retry) and
    ``retry_mode`` (``"standard"``), or a whole ``retry=RetryPolicy(...)``; ``interceptors``
    (grpc.aio client interceptors) wrap the channel."""

    def __init__(
        self,
        endpoint: str,
        ca_file: str | Path,
        credentials: Credentials | CredentialProvider | None,
        *,
        region: str | None = None,
        server_name: str | None = None,
        timeout: float = _ops.DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int | None = None,
        retry_mode: str | None = None,
        retry: RetryPolicy | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    ) -> None:
        target, options = _ops.channel_target(endpoint, server_name)
        channel = grpc.aio.secure_channel(
            target,
            _ops.credentials(ca_file),
            options=options,
            interceptors=interceptors,
        )
        provider = as_provider(credentials)
        #: One policy (and retry quota) for every service of this client.
        policy = _ops.retry_policy(retry, max_attempts, retry_mode)
        super().__init__(channel, _ops.SECRETS, timeout, endpoint, provider, policy)
        self.endpoint = endpoint
        self.region = region
        self.kms = AsyncKmsClient(channel, _ops.KMS, timeout, endpoint, provider, policy)
        #: IAM (users, roles, policies, access keys), STS and Organizations: served by the store.
        self.iam = AsyncIamClient(channel, _ops.IAM, timeout, endpoint, provider, policy)
        self.sts = AsyncStsClient(channel, _ops.STS, timeout, endpoint, provider, policy)
        self.organizations = AsyncOrganizationsClient(
            channel, _ops.ORGANIZATIONS, timeout, endpoint, provider, policy
        )
        self.audit = AsyncAuditClient(channel, _ops.AUDIT, timeout, endpoint, provider, policy)
        #: The kms's seal (``coffer operator``; operators only): ``.operator.call("OperatorStatus")``.
        self.operator = _AsyncService(channel, _ops.SEAL, timeout, endpoint, provider, policy)
        #: Metering (``coffer usage get``): ``.usage.call("GetUsage", month="2026-03")``.
        self.usage = _AsyncService(channel, _ops.USAGE, timeout, endpoint, provider, policy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> AsyncCofferClient:
        """COFFER_ENDPOINT / COFFER_CA_FILE / COFFER_ACCESS_KEY_ID + COFFER_SECRET_ACCESS_KEY (+
        COFFER_SESSION_TOKEN) / COFFER_REGION, else the profile's values."""
        conn = resolve_connection(env=env)
        return cls(conn.endpoint, conn.ca_file, conn.credentials, **_ops.connection_options(conn, options))

    @classmethod
    def from_profile(
        cls, path: Path | None = None, *, region: str | None = None, **options: Any
    ) -> AsyncCofferClient:
        """The profile at ``path`` (default: $COFFER_PROFILE, ./.coffer/, ~/.config/coffer/profile.json);
        ``region`` picks one of its regions (default: the profile's own, e.g. ``local-1``)."""
        profile: Profile = load_profile(path)
        conn = resolve_connection(profile=profile, region=region, env={})
        return cls(conn.endpoint, conn.ca_file, conn.credentials, **_ops.connection_options(conn, options))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncCofferClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def watch_secrets(
        self,
        *,
        resume_token: str | None = None,
        secret_ids: Sequence[str] = (),
        name_prefix: str | None = None,
    ) -> AsyncGenerator[sm.SecretChangeEvent, None]:
        """The change stream (issue 14, beyond AWS): every change of the secrets this caller may describe, in
        commit order, starting with a ``Heartbeat`` (the stream is live from there). Keep the last event's
        ``resume_token`` and pass it back to resume with nothing missed and nothing twice. The stream is not
        retried here: when it breaks, call again with the token. A token too old to resume raises
        ``InvalidRequestException``: re-read what you cache and watch again without one. The stream has no
        deadline (bound it with ``asyncio.timeout`` if you need one); leaving the loop cancels the call."""
        op = _ops.operation(self._service, "WatchSecrets")
        msg = _ops.watch_request(resume_token, secret_ids, name_prefix)
        stream = self._channel.unary_stream(
            op.path,
            request_serializer=op.request_type.SerializeToString,
            response_deserializer=op.response_type.FromString,
        )
        used = await current_credentials(self._credentials) if self._credentials is not None else None
        metadata = signed_metadata(used, op.path, msg) if used is not None else None
        call = stream(msg, metadata=metadata)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise _ops.map_rpc_error(exc, self._endpoint, "WatchSecrets") from None
        finally:
            call.cancel()

    async def create_secret(self, **fields: Any) -> sm.CreateSecretResponse:
        return await self._call("CreateSecret", sm.CreateSecretResponse, fields)

    async def describe_secret(self, **fields: Any) -> sm.DescribeSecretResponse:
        return await self._call("DescribeSecret", sm.DescribeSecretResponse, fields)

    async def get_secret_value(self, **fields: Any) -> sm.GetSecretValueResponse:
        return await self._call("GetSecretValue", sm.GetSecretValueResponse, fields)

    async def batch_get_secret_value(self, **fields: Any) -> sm.BatchGetSecretValueResponse:
        return await self._call("BatchGetSecretValue", sm.BatchGetSecretValueResponse, fields)

    async def put_secret_value(self, **fields: Any) -> sm.PutSecretValueResponse:
        return await self._call("PutSecretValue", sm.PutSecretValueResponse, fields)

    async def update_secret(self, **fields: Any) -> sm.UpdateSecretResponse:
        return await self._call("UpdateSecret", sm.UpdateSecretResponse, fields)

    async def update_secret_version_stage(self, **fields: Any) -> sm.UpdateSecretVersionStageResponse:
        return await self._call("UpdateSecretVersionStage", sm.UpdateSecretVersionStageResponse, fields)

    async def list_secrets(self, **fields: Any) -> sm.ListSecretsResponse:
        return await self._call("ListSecrets", sm.ListSecretsResponse, fields)

    async def list_secret_version_ids(self, **fields: Any) -> sm.ListSecretVersionIdsResponse:
        return await self._call("ListSecretVersionIds", sm.ListSecretVersionIdsResponse, fields)

    async def delete_secret(self, **fields: Any) -> sm.DeleteSecretResponse:
        return await self._call("DeleteSecret", sm.DeleteSecretResponse, fields)

    async def restore_secret(self, **fields: Any) -> sm.RestoreSecretResponse:
        return await self._call("RestoreSecret", sm.RestoreSecretResponse, fields)

    async def tag_resource(self, **fields: Any) -> sm.TagResourceResponse:
        return await self._call("TagResource", sm.TagResourceResponse, fields)

    async def untag_resource(self, **fields: Any) -> sm.UntagResourceResponse:
        return await self._call("UntagResource", sm.UntagResourceResponse, fields)

    async def put_resource_policy(self, **fields: Any) -> sm.PutResourcePolicyResponse:
        return await self._call("PutResourcePolicy", sm.PutResourcePolicyResponse, fields)

    async def get_resource_policy(self, **fields: Any) -> sm.GetResourcePolicyResponse:
        return await self._call("GetResourcePolicy", sm.GetResourcePolicyResponse, fields)

    async def delete_resource_policy(self, **fields: Any) -> sm.DeleteResourcePolicyResponse:
        return await self._call("DeleteResourcePolicy", sm.DeleteResourcePolicyResponse, fields)

    async def validate_resource_policy(self, **fields: Any) -> sm.ValidateResourcePolicyResponse:
        return await self._call("ValidateResourcePolicy", sm.ValidateResourcePolicyResponse, fields)

    async def get_random_password(self, **fields: Any) -> sm.GetRandomPasswordResponse:
        return await self._call("GetRandomPassword", sm.GetRandomPasswordResponse, fields)
