"""The public gRPC API of Coffer: ``coffer.api.secrets.v1.SecretsManagerService`` and
``coffer.api.kms.v1.KeyManagementService``.

Proto ⇄ use case only. Each method names its IAM-style action and the resource it touches, and hands the
forwarding call to ``GatewayApp.call`` (authorize → run → audit). Requests travel to the store / kms
unchanged; the caller's principal and the request id go along as metadata (``coffer.rpc.channel``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.api.store.v1 import store_pb2_grpc
from coffer.core.password import DEFAULT_LENGTH, PasswordRequest
from coffer.gateway.app import GatewayApp
from coffer.gateway.authz import ANY_RESOURCE
from coffer.rpc.context import current_principal, current_request_id

T = TypeVar("T")

#: Upper bound on one forwarded call (the store's own KMS calls and SQL happen inside it).
FORWARD_TIMEOUT_SECONDS = 30.0

Context: TypeAlias = grpc.aio.ServicerContext


class _Forwarder:
    def __init__(self, app: GatewayApp, service: str) -> None:
        self._app = app
        self._service = service

    async def _run(self, operation: str, resource: str, run: Callable[[], Awaitable[T]]) -> T:
        return await self._app.call(
            principal=current_principal(),
            request_id=current_request_id(),
            action=f"{self._service}:{operation}",
            resource=resource or ANY_RESOURCE,
            run=run,
        )


def _call(method: Any, request: Any, context: Context) -> Callable[[], Awaitable[Any]]:
    """Forward ``request`` unchanged, within the caller's deadline (at most FORWARD_TIMEOUT_SECONDS)."""

    async def run() -> Any:
        remaining = context.time_remaining()
        timeout = FORWARD_TIMEOUT_SECONDS if remaining is None else min(remaining, FORWARD_TIMEOUT_SECONDS)
        return await method(request, timeout=max(timeout, 0.001))

    return run


def password_request(request: sm.GetRandomPasswordRequest) -> PasswordRequest:
    """Proto → domain, applying the AWS defaults to absent fields."""

    # Absent booleans read as False, which is their default; only RequireEachIncludedType defaults to True.
    return PasswordRequest(
        password_length=request.password_length if request.HasField("password_length") else DEFAULT_LENGTH,
        exclude_characters=request.exclude_characters,
        exclude_numbers=request.exclude_numbers,
        exclude_punctuation=request.exclude_punctuation,
        exclude_uppercase=request.exclude_uppercase,
        exclude_lowercase=request.exclude_lowercase,
        include_space=request.include_space,
        require_each_included_type=(
            request.require_each_included_type if request.HasField("require_each_included_type") else True
        ),
    )


class SecretsManagerServicer(_Forwarder, secrets_pb2_grpc.SecretsManagerServiceServicer):
    def __init__(self, app: GatewayApp, store: store_pb2_grpc.SecretStoreServiceStub) -> None:
        super().__init__(app, "secretsmanager")
        self._store = store

    async def CreateSecret(
        self, request: sm.CreateSecretRequest, context: Context
    ) -> sm.CreateSecretResponse:
        return await self._run(
            "CreateSecret", request.name, _call(self._store.CreateSecret, request, context)
        )

    async def DescribeSecret(
        self, request: sm.DescribeSecretRequest, context: Context
    ) -> sm.DescribeSecretResponse:
        return await self._run(
            "DescribeSecret", request.secret_id, _call(self._store.DescribeSecret, request, context)
        )

    async def GetSecretValue(
        self, request: sm.GetSecretValueRequest, context: Context
    ) -> sm.GetSecretValueResponse:
        return await self._run(
            "GetSecretValue", request.secret_id, _call(self._store.GetSecretValue, request, context)
        )

    async def BatchGetSecretValue(
        self, request: sm.BatchGetSecretValueRequest, context: Context
    ) -> sm.BatchGetSecretValueResponse:
        resource = ",".join(request.secret_id_list) or ANY_RESOURCE
        return await self._run(
            "BatchGetSecretValue", resource, _call(self._store.BatchGetSecretValue, request, context)
        )

    async def PutSecretValue(
        self, request: sm.PutSecretValueRequest, context: Context
    ) -> sm.PutSecretValueResponse:
        return await self._run(
            "PutSecretValue", request.secret_id, _call(self._store.PutSecretValue, request, context)
        )

    async def UpdateSecret(
        self, request: sm.UpdateSecretRequest, context: Context
    ) -> sm.UpdateSecretResponse:
        return await self._run(
            "UpdateSecret", request.secret_id, _call(self._store.UpdateSecret, request, context)
        )

    async def UpdateSecretVersionStage(
        self, request: sm.UpdateSecretVersionStageRequest, context: Context
    ) -> sm.UpdateSecretVersionStageResponse:
        return await self._run(
            "UpdateSecretVersionStage",
            request.secret_id,
            _call(self._store.UpdateSecretVersionStage, request, context),
        )

    async def ListSecrets(self, request: sm.ListSecretsRequest, context: Context) -> sm.ListSecretsResponse:
        return await self._run("ListSecrets", ANY_RESOURCE, _call(self._store.ListSecrets, request, context))

    async def ListSecretVersionIds(
        self, request: sm.ListSecretVersionIdsRequest, context: Context
    ) -> sm.ListSecretVersionIdsResponse:
        return await self._run(
            "ListSecretVersionIds",
            request.secret_id,
            _call(self._store.ListSecretVersionIds, request, context),
        )

    async def DeleteSecret(
        self, request: sm.DeleteSecretRequest, context: Context
    ) -> sm.DeleteSecretResponse:
        return await self._run(
            "DeleteSecret", request.secret_id, _call(self._store.DeleteSecret, request, context)
        )

    async def RestoreSecret(
        self, request: sm.RestoreSecretRequest, context: Context
    ) -> sm.RestoreSecretResponse:
        return await self._run(
            "RestoreSecret", request.secret_id, _call(self._store.RestoreSecret, request, context)
        )

    async def TagResource(self, request: sm.TagResourceRequest, context: Context) -> sm.TagResourceResponse:
        return await self._run(
            "TagResource", request.secret_id, _call(self._store.TagResource, request, context)
        )

    async def UntagResource(
        self, request: sm.UntagResourceRequest, context: Context
    ) -> sm.UntagResourceResponse:
        return await self._run(
            "UntagResource", request.secret_id, _call(self._store.UntagResource, request, context)
        )

    async def GetRandomPassword(
        self, request: sm.GetRandomPasswordRequest, context: Context
    ) -> sm.GetRandomPasswordResponse:
        policy = password_request(request)

        async def run() -> sm.GetRandomPasswordResponse:
            return sm.GetRandomPasswordResponse(random_password=await self._app.random_password(policy))

        return await self._run("GetRandomPassword", ANY_RESOURCE, run)

    async def RotateSecret(
        self, request: sm.RotateSecretRequest, context: Context
    ) -> sm.RotateSecretResponse:
        return await self._run(
            "RotateSecret", request.secret_id, _call(self._store.RotateSecret, request, context)
        )

    async def CancelRotateSecret(
        self, request: sm.CancelRotateSecretRequest, context: Context
    ) -> sm.CancelRotateSecretResponse:
        return await self._run(
            "CancelRotateSecret", request.secret_id, _call(self._store.CancelRotateSecret, request, context)
        )

    async def ListRotationAttempts(
        self, request: sm.ListRotationAttemptsRequest, context: Context
    ) -> sm.ListRotationAttemptsResponse:
        return await self._run(
            "ListRotationAttempts",
            request.secret_id,
            _call(self._store.ListRotationAttempts, request, context),
        )

    async def RegisterRotationFunction(
        self, request: sm.RegisterRotationFunctionRequest, context: Context
    ) -> sm.RegisterRotationFunctionResponse:
        return await self._run(
            "RegisterRotationFunction",
            request.name,
            _call(self._store.RegisterRotationFunction, request, context),
        )

    async def ListRotationFunctions(
        self, request: sm.ListRotationFunctionsRequest, context: Context
    ) -> sm.ListRotationFunctionsResponse:
        return await self._run(
            "ListRotationFunctions", ANY_RESOURCE, _call(self._store.ListRotationFunctions, request, context)
        )

    async def DeleteRotationFunction(
        self, request: sm.DeleteRotationFunctionRequest, context: Context
    ) -> sm.DeleteRotationFunctionResponse:
        return await self._run(
            "DeleteRotationFunction",
            request.function_id,
            _call(self._store.DeleteRotationFunction, request, context),
        )

    async def ReplicateSecretToRegions(
        self, request: sm.ReplicateSecretToRegionsRequest, context: Context
    ) -> sm.ReplicateSecretToRegionsResponse:
        return await self._run(
            "ReplicateSecretToRegions",
            request.secret_id,
            _call(self._store.ReplicateSecretToRegions, request, context),
        )

    async def RemoveRegionsFromReplication(
        self, request: sm.RemoveRegionsFromReplicationRequest, context: Context
    ) -> sm.RemoveRegionsFromReplicationResponse:
        return await self._run(
            "RemoveRegionsFromReplication",
            request.secret_id,
            _call(self._store.RemoveRegionsFromReplication, request, context),
        )

    async def StopReplicationToReplica(
        self, request: sm.StopReplicationToReplicaRequest, context: Context
    ) -> sm.StopReplicationToReplicaResponse:
        return await self._run(
            "StopReplicationToReplica",
            request.secret_id,
            _call(self._store.StopReplicationToReplica, request, context),
        )


class KeyManagementServicer(_Forwarder, kms_pb2_grpc.KeyManagementServiceServicer):
    """The public KMS API: every RPC forwarded to the kms service (which refuses the gateway crypto and
    configuration calls on the AWS-managed default key)."""

    def __init__(self, app: GatewayApp, kms: kms_pb2_grpc.KeyManagementServiceStub) -> None:
        super().__init__(app, "kms")
        self._kms = kms

    async def CreateKey(
        self, request: kms_pb2.CreateKeyRequest, context: Context
    ) -> kms_pb2.CreateKeyResponse:
        return await self._run("CreateKey", ANY_RESOURCE, _call(self._kms.CreateKey, request, context))

    async def DescribeKey(
        self, request: kms_pb2.DescribeKeyRequest, context: Context
    ) -> kms_pb2.DescribeKeyResponse:
        return await self._run("DescribeKey", request.key_id, _call(self._kms.DescribeKey, request, context))

    async def ListKeys(self, request: kms_pb2.ListKeysRequest, context: Context) -> kms_pb2.ListKeysResponse:
        return await self._run("ListKeys", ANY_RESOURCE, _call(self._kms.ListKeys, request, context))

    async def EnableKey(
        self, request: kms_pb2.EnableKeyRequest, context: Context
    ) -> kms_pb2.EnableKeyResponse:
        return await self._run("EnableKey", request.key_id, _call(self._kms.EnableKey, request, context))

    async def DisableKey(
        self, request: kms_pb2.DisableKeyRequest, context: Context
    ) -> kms_pb2.DisableKeyResponse:
        return await self._run("DisableKey", request.key_id, _call(self._kms.DisableKey, request, context))

    async def ScheduleKeyDeletion(
        self, request: kms_pb2.ScheduleKeyDeletionRequest, context: Context
    ) -> kms_pb2.ScheduleKeyDeletionResponse:
        return await self._run(
            "ScheduleKeyDeletion", request.key_id, _call(self._kms.ScheduleKeyDeletion, request, context)
        )

    async def CancelKeyDeletion(
        self, request: kms_pb2.CancelKeyDeletionRequest, context: Context
    ) -> kms_pb2.CancelKeyDeletionResponse:
        return await self._run(
            "CancelKeyDeletion", request.key_id, _call(self._kms.CancelKeyDeletion, request, context)
        )

    async def CreateAlias(
        self, request: kms_pb2.CreateAliasRequest, context: Context
    ) -> kms_pb2.CreateAliasResponse:
        return await self._run(
            "CreateAlias", request.alias_name, _call(self._kms.CreateAlias, request, context)
        )

    async def ListAliases(
        self, request: kms_pb2.ListAliasesRequest, context: Context
    ) -> kms_pb2.ListAliasesResponse:
        return await self._run("ListAliases", request.key_id, _call(self._kms.ListAliases, request, context))

    async def DeleteAlias(
        self, request: kms_pb2.DeleteAliasRequest, context: Context
    ) -> kms_pb2.DeleteAliasResponse:
        return await self._run(
            "DeleteAlias", request.alias_name, _call(self._kms.DeleteAlias, request, context)
        )

    async def EnableKeyRotation(
        self, request: kms_pb2.EnableKeyRotationRequest, context: Context
    ) -> kms_pb2.EnableKeyRotationResponse:
        return await self._run(
            "EnableKeyRotation", request.key_id, _call(self._kms.EnableKeyRotation, request, context)
        )

    async def DisableKeyRotation(
        self, request: kms_pb2.DisableKeyRotationRequest, context: Context
    ) -> kms_pb2.DisableKeyRotationResponse:
        return await self._run(
            "DisableKeyRotation", request.key_id, _call(self._kms.DisableKeyRotation, request, context)
        )

    async def GetKeyRotationStatus(
        self, request: kms_pb2.GetKeyRotationStatusRequest, context: Context
    ) -> kms_pb2.GetKeyRotationStatusResponse:
        return await self._run(
            "GetKeyRotationStatus", request.key_id, _call(self._kms.GetKeyRotationStatus, request, context)
        )

    async def RotateKeyOnDemand(
        self, request: kms_pb2.RotateKeyOnDemandRequest, context: Context
    ) -> kms_pb2.RotateKeyOnDemandResponse:
        return await self._run(
            "RotateKeyOnDemand", request.key_id, _call(self._kms.RotateKeyOnDemand, request, context)
        )

    async def GenerateDataKey(
        self, request: kms_pb2.GenerateDataKeyRequest, context: Context
    ) -> kms_pb2.GenerateDataKeyResponse:
        return await self._run(
            "GenerateDataKey", request.key_id, _call(self._kms.GenerateDataKey, request, context)
        )

    async def Encrypt(self, request: kms_pb2.EncryptRequest, context: Context) -> kms_pb2.EncryptResponse:
        return await self._run("Encrypt", request.key_id, _call(self._kms.Encrypt, request, context))

    async def Decrypt(self, request: kms_pb2.DecryptRequest, context: Context) -> kms_pb2.DecryptResponse:
        return await self._run("Decrypt", request.key_id, _call(self._kms.Decrypt, request, context))
