"""The synchronous Python SDK: ``CofferClient`` (same methods as ``AsyncCofferClient``, without ``await``).

Methods are the operations in snake_case; keyword arguments are the request fields (snake_case proto field
names); they **return the response protobuf messages**; failures raise ``CofferError`` subclasses (``code`` =
AWS error name). ``client_request_token`` is auto-filled for CreateSecret, PutSecretValue, UpdateSecret and
RotateSecret.

    with CofferClient.from_env() as client:
        client.create_secret(name="db/prod", secret_string="{...}")
        print(client.get_secret_value(secret_id="db/prod").secret_string)
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
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
from coffer.client.credentials import CredentialProvider, Credentials, as_provider, signed_metadata
from coffer.client.profile import Profile, load_profile, resolve_connection
from coffer.client.retry import RetryPolicy

R = TypeVar("R", bound=Message)


class _SyncService:
    def __init__(
        self,
        channel: grpc.Channel,
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

    def call(self, operation: str, request: Message | None = None, /, **fields: Any) -> Message:
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
        run = self._retry.start(operation)
        while True:
            try:
                metadata = (
                    signed_metadata(self._credentials(), op.path, msg)
                    if self._credentials is not None
                    else None
                )
                response: Message = callable_(msg, timeout=self._timeout, metadata=metadata)
            except grpc.RpcError as exc:
                error = _ops.map_rpc_error(exc, self._endpoint, operation)
                delay = run.next_delay(error)
                if delay is None:
                    raise error from None
                self._retry.sleep(delay)
                continue
            run.succeeded()
            return response

    def _call(self, operation: str, response_type: type[R], fields: Mapping[str, Any]) -> R:
        response = self.call(operation, **fields)
        if not isinstance(response, response_type):  # pragma: no cover - the descriptor decides the type
            raise TypeError(f"{operation} returned {type(response).__name__}")
        return response


class AuditClient(_SyncService):
    """The audit trail (``coffer.api.audit.v1.AuditService``) through the gateway."""

    def lookup_events(self, **fields: Any) -> audit_pb2.LookupEventsResponse:
        return self._call("LookupEvents", audit_pb2.LookupEventsResponse, fields)

    def get_digest_public_key(self, **fields: Any) -> audit_pb2.GetDigestPublicKeyResponse:
        return self._call("GetDigestPublicKey", audit_pb2.GetDigestPublicKeyResponse, fields)

    def export_trail(self, **fields: Any) -> audit_pb2.ExportTrailResponse:
        return self._call("ExportTrail", audit_pb2.ExportTrailResponse, fields)


class KmsClient(_SyncService):
    """Key operations (``coffer.api.kms.v1.KeyManagementService``) through the gateway."""

    def create_key(self, **fields: Any) -> kms_pb2.CreateKeyResponse:
        return self._call("CreateKey", kms_pb2.CreateKeyResponse, fields)

    def describe_key(self, **fields: Any) -> kms_pb2.DescribeKeyResponse:
        return self._call("DescribeKey", kms_pb2.DescribeKeyResponse, fields)

    def list_keys(self, **fields: Any) -> kms_pb2.ListKeysResponse:
        return self._call("ListKeys", kms_pb2.ListKeysResponse, fields)

    def enable_key(self, **fields: Any) -> kms_pb2.EnableKeyResponse:
        return self._call("EnableKey", kms_pb2.EnableKeyResponse, fields)

    def disable_key(self, **fields: Any) -> kms_pb2.DisableKeyResponse:
        return self._call("DisableKey", kms_pb2.DisableKeyResponse, fields)

    def schedule_key_deletion(self, **fields: Any) -> kms_pb2.ScheduleKeyDeletionResponse:
        return self._call("ScheduleKeyDeletion", kms_pb2.ScheduleKeyDeletionResponse, fields)

    def cancel_key_deletion(self, **fields: Any) -> kms_pb2.CancelKeyDeletionResponse:
        return self._call("CancelKeyDeletion", kms_pb2.CancelKeyDeletionResponse, fields)

    def create_alias(self, **fields: Any) -> kms_pb2.CreateAliasResponse:
        return self._call("CreateAlias", kms_pb2.CreateAliasResponse, fields)

    def list_aliases(self, **fields: Any) -> kms_pb2.ListAliasesResponse:
        return self._call("ListAliases", kms_pb2.ListAliasesResponse, fields)

    def delete_alias(self, **fields: Any) -> kms_pb2.DeleteAliasResponse:
        return self._call("DeleteAlias", kms_pb2.DeleteAliasResponse, fields)

    def enable_key_rotation(self, **fields: Any) -> kms_pb2.EnableKeyRotationResponse:
        return self._call("EnableKeyRotation", kms_pb2.EnableKeyRotationResponse, fields)

    def disable_key_rotation(self, **fields: Any) -> kms_pb2.DisableKeyRotationResponse:
        return self._call("DisableKeyRotation", kms_pb2.DisableKeyRotationResponse, fields)

    def get_key_rotation_status(self, **fields: Any) -> kms_pb2.GetKeyRotationStatusResponse:
        return self._call("GetKeyRotationStatus", kms_pb2.GetKeyRotationStatusResponse, fields)

    def rotate_key_on_demand(self, **fields: Any) -> kms_pb2.RotateKeyOnDemandResponse:
        return self._call("RotateKeyOnDemand", kms_pb2.RotateKeyOnDemandResponse, fields)

    def generate_data_key(self, **fields: Any) -> kms_pb2.GenerateDataKeyResponse:
        return self._call("GenerateDataKey", kms_pb2.GenerateDataKeyResponse, fields)

    def encrypt(self, **fields: Any) -> kms_pb2.EncryptResponse:
        return self._call("Encrypt", kms_pb2.EncryptResponse, fields)

    def decrypt(self, **fields: Any) -> kms_pb2.DecryptResponse:
        return self._call("Decrypt", kms_pb2.DecryptResponse, fields)

    def get_key_policy(self, **fields: Any) -> kms_pb2.GetKeyPolicyResponse:
        return self._call("GetKeyPolicy", kms_pb2.GetKeyPolicyResponse, fields)

    def put_key_policy(self, **fields: Any) -> kms_pb2.PutKeyPolicyResponse:
        return self._call("PutKeyPolicy", kms_pb2.PutKeyPolicyResponse, fields)


class IamClient(_SyncService):
    """IAM operations (``coffer.api.iam.v1.IdentityManagementService``) through the gateway."""

    def create_user(self, **fields: Any) -> iam_pb2.CreateUserResponse:
        return self._call("CreateUser", iam_pb2.CreateUserResponse, fields)

    def get_user(self, **fields: Any) -> iam_pb2.GetUserResponse:
        return self._call("GetUser", iam_pb2.GetUserResponse, fields)

    def delete_user(self, **fields: Any) -> iam_pb2.DeleteUserResponse:
        return self._call("DeleteUser", iam_pb2.DeleteUserResponse, fields)

    def list_users(self, **fields: Any) -> iam_pb2.ListUsersResponse:
        return self._call("ListUsers", iam_pb2.ListUsersResponse, fields)

    def tag_user(self, **fields: Any) -> iam_pb2.TagUserResponse:
        return self._call("TagUser", iam_pb2.TagUserResponse, fields)

    def untag_user(self, **fields: Any) -> iam_pb2.UntagUserResponse:
        return self._call("UntagUser", iam_pb2.UntagUserResponse, fields)

    def list_user_tags(self, **fields: Any) -> iam_pb2.ListUserTagsResponse:
        return self._call("ListUserTags", iam_pb2.ListUserTagsResponse, fields)

    def create_role(self, **fields: Any) -> iam_pb2.CreateRoleResponse:
        return self._call("CreateRole", iam_pb2.CreateRoleResponse, fields)

    def get_role(self, **fields: Any) -> iam_pb2.GetRoleResponse:
        return self._call("GetRole", iam_pb2.GetRoleResponse, fields)

    def delete_role(self, **fields: Any) -> iam_pb2.DeleteRoleResponse:
        return self._call("DeleteRole", iam_pb2.DeleteRoleResponse, fields)

    def list_roles(self, **fields: Any) -> iam_pb2.ListRolesResponse:
        return self._call("ListRoles", iam_pb2.ListRolesResponse, fields)

    def tag_role(self, **fields: Any) -> iam_pb2.TagRoleResponse:
        return self._call("TagRole", iam_pb2.TagRoleResponse, fields)

    def untag_role(self, **fields: Any) -> iam_pb2.UntagRoleResponse:
        return self._call("UntagRole", iam_pb2.UntagRoleResponse, fields)

    def update_assume_role_policy(self, **fields: Any) -> iam_pb2.UpdateAssumeRolePolicyResponse:
        return self._call("UpdateAssumeRolePolicy", iam_pb2.UpdateAssumeRolePolicyResponse, fields)

    def put_user_policy(self, **fields: Any) -> iam_pb2.PutUserPolicyResponse:
        return self._call("PutUserPolicy", iam_pb2.PutUserPolicyResponse, fields)

    def get_user_policy(self, **fields: Any) -> iam_pb2.GetUserPolicyResponse:
        return self._call("GetUserPolicy", iam_pb2.GetUserPolicyResponse, fields)

    def delete_user_policy(self, **fields: Any) -> iam_pb2.DeleteUserPolicyResponse:
        return self._call("DeleteUserPolicy", iam_pb2.DeleteUserPolicyResponse, fields)

    def list_user_policies(self, **fields: Any) -> iam_pb2.ListUserPoliciesResponse:
        return self._call("ListUserPolicies", iam_pb2.ListUserPoliciesResponse, fields)

    def put_role_policy(self, **fields: Any) -> iam_pb2.PutRolePolicyResponse:
        return self._call("PutRolePolicy", iam_pb2.PutRolePolicyResponse, fields)

    def get_role_policy(self, **fields: Any) -> iam_pb2.GetRolePolicyResponse:
        return self._call("GetRolePolicy", iam_pb2.GetRolePolicyResponse, fields)

    def delete_role_policy(self, **fields: Any) -> iam_pb2.DeleteRolePolicyResponse:
        return self._call("DeleteRolePolicy", iam_pb2.DeleteRolePolicyResponse, fields)

    def list_role_policies(self, **fields: Any) -> iam_pb2.ListRolePoliciesResponse:
        return self._call("ListRolePolicies", iam_pb2.ListRolePoliciesResponse, fields)

    def create_access_key(self, **fields: Any) -> iam_pb2.CreateAccessKeyResponse:
        return self._call("CreateAccessKey", iam_pb2.CreateAccessKeyResponse, fields)

    def list_access_keys(self, **fields: Any) -> iam_pb2.ListAccessKeysResponse:
        return self._call("ListAccessKeys", iam_pb2.ListAccessKeysResponse, fields)

    def update_access_key(self, **fields: Any) -> iam_pb2.UpdateAccessKeyResponse:
        return self._call("UpdateAccessKey", iam_pb2.UpdateAccessKeyResponse, fields)

    def delete_access_key(self, **fields: Any) -> iam_pb2.DeleteAccessKeyResponse:
        return self._call("DeleteAccessKey", iam_pb2.DeleteAccessKeyResponse, fields)


class StsClient(_SyncService):
    """STS operations (``coffer.api.iam.v1.SecurityTokenService``) through the gateway."""

    def get_caller_identity(self, **fields: Any) -> iam_pb2.GetCallerIdentityResponse:
        return self._call("GetCallerIdentity", iam_pb2.GetCallerIdentityResponse, fields)

    def assume_role(self, **fields: Any) -> iam_pb2.AssumeRoleResponse:
        return self._call("AssumeRole", iam_pb2.AssumeRoleResponse, fields)


class OrganizationsClient(_SyncService):
    """Organizations operations (``coffer.api.iam.v1.OrganizationsService``) through the gateway."""

    def create_account(self, **fields: Any) -> iam_pb2.CreateAccountResponse:
        return self._call("CreateAccount", iam_pb2.CreateAccountResponse, fields)

    def list_accounts(self, **fields: Any) -> iam_pb2.ListAccountsResponse:
        return self._call("ListAccounts", iam_pb2.ListAccountsResponse, fields)


class CofferClient(_SyncService):
    """Secrets Manager operations through the gateway; ``.kms`` for key operations.

    Failed calls are retried as ``coffer.client.retry`` says: ``max_attempts`` (default 3; 1 = no retry) and
    ``retry_mode`` (``"standard"``), or a whole ``retry=RetryPolicy(...)``; ``interceptors``
    (grpc.UnaryUnaryClientInterceptor) wrap the channel."""

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
        interceptors: Sequence[Any] | None = None,
    ) -> None:
        target, options = _ops.channel_target(endpoint, server_name)
        channel = grpc.secure_channel(
            target,
            _ops.credentials(ca_file),
            options=options,
        )
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        provider = as_provider(credentials)
        #: One policy (and retry quota) for every service of this client.
        policy = _ops.retry_policy(retry, max_attempts, retry_mode)
        super().__init__(channel, _ops.SECRETS, timeout, endpoint, provider, policy)
        self.endpoint = endpoint
        self.region = region
        self.kms = KmsClient(channel, _ops.KMS, timeout, endpoint, provider, policy)
        #: IAM (users, roles, policies, access keys), STS and Organizations: served by the store.
        self.iam = IamClient(channel, _ops.IAM, timeout, endpoint, provider, policy)
        self.sts = StsClient(channel, _ops.STS, timeout, endpoint, provider, policy)
        self.organizations = OrganizationsClient(
            channel, _ops.ORGANIZATIONS, timeout, endpoint, provider, policy
        )
        self.audit = AuditClient(channel, _ops.AUDIT, timeout, endpoint, provider, policy)
        #: The kms's seal (``coffer operator``; operators only): ``.operator.call("OperatorStatus")``.
        self.operator = _SyncService(channel, _ops.SEAL, timeout, endpoint, provider, policy)
        #: Metering (``coffer usage get``): ``.usage.call("GetUsage", month="2026-03")``.
        self.usage = _SyncService(channel, _ops.USAGE, timeout, endpoint, provider, policy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> CofferClient:
        """COFFER_ENDPOINT / COFFER_CA_FILE / COFFER_ACCESS_KEY_ID + COFFER_SECRET_ACCESS_KEY (+
        COFFER_SESSION_TOKEN) / COFFER_REGION, else the profile's values."""
        conn = resolve_connection(env=env)
        return cls(conn.endpoint, conn.ca_file, conn.credentials, **_ops.connection_options(conn, options))

    @classmethod
    def from_profile(
        cls, path: Path | None = None, *, region: str | None = None, **options: Any
    ) -> CofferClient:
        """The profile at ``path`` (default: $COFFER_PROFILE, ./.coffer/, ~/.config/coffer/profile.json);
        ``region`` picks one of its regions (default: the profile's own, e.g. ``local-1``)."""
        profile: Profile = load_profile(path)
        conn = resolve_connection(profile=profile, region=region, env={})
        return cls(conn.endpoint, conn.ca_file, conn.credentials, **_ops.connection_options(conn, options))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CofferClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def watch_secrets(
        self,
        *,
        resume_token: str | None = None,
        secret_ids: Sequence[str] = (),
        name_prefix: str | None = None,
    ) -> Generator[sm.SecretChangeEvent, None, None]:
        """The change stream, as :meth:`coffer.client.aio.AsyncCofferClient.watch_secrets` (not retried here:
        resume with the last event's token). Closing the iterator cancels the call."""
        op = _ops.operation(self._service, "WatchSecrets")
        msg = _ops.watch_request(resume_token, secret_ids, name_prefix)
        stream = self._channel.unary_stream(
            op.path,
            request_serializer=op.request_type.SerializeToString,
            response_deserializer=op.response_type.FromString,
        )
        metadata = (
            signed_metadata(self._credentials(), op.path, msg) if self._credentials is not None else None
        )
        call = stream(msg, metadata=metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise _ops.map_rpc_error(exc, self._endpoint, "WatchSecrets") from None
        finally:
            call.cancel()

    def create_secret(self, **fields: Any) -> sm.CreateSecretResponse:
        return self._call("CreateSecret", sm.CreateSecretResponse, fields)

    def describe_secret(self, **fields: Any) -> sm.DescribeSecretResponse:
        return self._call("DescribeSecret", sm.DescribeSecretResponse, fields)

    def get_secret_value(self, **fields: Any) -> sm.GetSecretValueResponse:
        return self._call("GetSecretValue", sm.GetSecretValueResponse, fields)

    def batch_get_secret_value(self, **fields: Any) -> sm.BatchGetSecretValueResponse:
        return self._call("BatchGetSecretValue", sm.BatchGetSecretValueResponse, fields)

    def put_secret_value(self, **fields: Any) -> sm.PutSecretValueResponse:
        return self._call("PutSecretValue", sm.PutSecretValueResponse, fields)

    def update_secret(self, **fields: Any) -> sm.UpdateSecretResponse:
        return self._call("UpdateSecret", sm.UpdateSecretResponse, fields)

    def update_secret_version_stage(self, **fields: Any) -> sm.UpdateSecretVersionStageResponse:
        return self._call("UpdateSecretVersionStage", sm.UpdateSecretVersionStageResponse, fields)

    def list_secrets(self, **fields: Any) -> sm.ListSecretsResponse:
        return self._call("ListSecrets", sm.ListSecretsResponse, fields)

    def list_secret_version_ids(self, **fields: Any) -> sm.ListSecretVersionIdsResponse:
        return self._call("ListSecretVersionIds", sm.ListSecretVersionIdsResponse, fields)

    def delete_secret(self, **fields: Any) -> sm.DeleteSecretResponse:
        return self._call("DeleteSecret", sm.DeleteSecretResponse, fields)

    def restore_secret(self, **fields: Any) -> sm.RestoreSecretResponse:
        return self._call("RestoreSecret", sm.RestoreSecretResponse, fields)

    def tag_resource(self, **fields: Any) -> sm.TagResourceResponse:
        return self._call("TagResource", sm.TagResourceResponse, fields)

    def untag_resource(self, **fields: Any) -> sm.UntagResourceResponse:
        return self._call("UntagResource", sm.UntagResourceResponse, fields)

    def put_resource_policy(self, **fields: Any) -> sm.PutResourcePolicyResponse:
        return self._call("PutResourcePolicy", sm.PutResourcePolicyResponse, fields)

    def get_resource_policy(self, **fields: Any) -> sm.GetResourcePolicyResponse:
        return self._call("GetResourcePolicy", sm.GetResourcePolicyResponse, fields)

    def delete_resource_policy(self, **fields: Any) -> sm.DeleteResourcePolicyResponse:
        return self._call("DeleteResourcePolicy", sm.DeleteResourcePolicyResponse, fields)

    def validate_resource_policy(self, **fields: Any) -> sm.ValidateResourcePolicyResponse:
        return self._call("ValidateResourcePolicy", sm.ValidateResourcePolicyResponse, fields)

    def get_random_password(self, **fields: Any) -> sm.GetRandomPasswordResponse:
        return self._call("GetRandomPassword", sm.GetRandomPasswordResponse, fields)
