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

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from coffer.api.audit.v1 import audit_pb2
from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client import _ops
from coffer.client.profile import Profile, load_profile, resolve_connection

R = TypeVar("R", bound=Message)


class _AsyncService:
    def __init__(
        self, channel: grpc.aio.Channel, service: ServiceDescriptor, timeout: float, endpoint: str
    ) -> None:
        self._channel = channel
        self._endpoint = endpoint
        self._service = service
        self._timeout = timeout
        self._callables: dict[str, Any] = {}

    async def call(self, operation: str, request: Message | None = None, /, **fields: Any) -> Message:
        """Call ``operation`` (its AWS name, e.g. ``"GetSecretValue"``) with a request message or fields."""
        op = _ops.operation(self._service, operation)
        msg = _ops.build_request(op, request, fields)
        callable_ = self._callables.get(operation)
        if callable_ is None:
            callable_ = self._channel.unary_unary(
                op.path,
                request_serializer=op.request_type.SerializeToString,
                response_deserializer=op.response_type.FromString,
            )
            self._callables[operation] = callable_
        try:
            response: Message = await callable_(msg, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise _ops.map_rpc_error(exc, self._endpoint) from None
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


class AsyncCofferClient(_AsyncService):
    """Secrets Manager operations through the gateway; ``.kms`` for key operations."""

    def __init__(
        self,
        endpoint: str,
        ca_file: str | Path,
        token: str | None,
        *,
        region: str | None = None,
        server_name: str | None = None,
        timeout: float = _ops.DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        channel = grpc.aio.secure_channel(
            _ops.target_of(endpoint),
            _ops.credentials(ca_file, token),
            options=_ops.channel_options(server_name),
        )
        super().__init__(channel, _ops.SECRETS, timeout, endpoint)
        self.endpoint = endpoint
        self.region = region
        self.kms = AsyncKmsClient(channel, _ops.KMS, timeout, endpoint)
        self.audit = AsyncAuditClient(channel, _ops.AUDIT, timeout, endpoint)
        #: The kms's seal (``coffer operator``; operators only): ``.operator.call("OperatorStatus")``.
        self.operator = _AsyncService(channel, _ops.SEAL, timeout, endpoint)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> AsyncCofferClient:
        """COFFER_ENDPOINT / COFFER_CA_FILE / COFFER_TOKEN / COFFER_REGION, else the profile's values."""
        conn = resolve_connection(env=env)
        return cls(conn.endpoint, conn.ca_file, conn.token, region=conn.region, **options)

    @classmethod
    def from_profile(
        cls, path: Path | None = None, *, region: str | None = None, **options: Any
    ) -> AsyncCofferClient:
        """The profile at ``path`` (default: $COFFER_PROFILE, ./.coffer/, ~/.config/coffer/profile.json);
        ``region`` picks one of its regions (default: the profile's own, e.g. ``local-1``)."""
        profile: Profile = load_profile(path)
        conn = resolve_connection(profile=profile, region=region, env={})
        return cls(conn.endpoint, conn.ca_file, conn.token, region=conn.region, **options)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncCofferClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

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

    async def get_random_password(self, **fields: Any) -> sm.GetRandomPasswordResponse:
        return await self._call("GetRandomPassword", sm.GetRandomPasswordResponse, fields)
