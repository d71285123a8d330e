"""gRPC ⇄ domain for ``coffer.api.kms.v1.KeyManagementService``: convert messages, call the use case, convert
back. No rules live here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.kms.app import KmsApp
from coffer.kms.model import ENCRYPTION_ALGORITHM, KEY_SPEC, KEY_USAGE, ORIGIN, Alias, Key, Tag
from coffer.rpc.context import current_peer

SERVICE_NAME = "coffer.api.kms.v1.KeyManagementService"


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def key_metadata(key: Key) -> kms_pb2.KeyMetadata:
    meta = kms_pb2.KeyMetadata(
        aws_account_id=key.account_id,
        key_id=key.key_id,
        arn=key.arn,
        creation_date=_ts(key.created_at),
        enabled=key.enabled,
        description=key.description,
        key_usage=KEY_USAGE,
        key_state=key.key_state.value,
        origin=ORIGIN,
        key_manager=key.key_manager.value,
        customer_master_key_spec=KEY_SPEC,
        key_spec=KEY_SPEC,
        encryption_algorithms=[ENCRYPTION_ALGORITHM],
        multi_region=key.multi_region,
        current_key_material_id=key.current_material_id,
    )
    if key.deletion_date is not None:
        meta.deletion_date.CopyFrom(_ts(key.deletion_date))
    if key.multi_region:
        meta.multi_region_configuration.CopyFrom(
            kms_pb2.MultiRegionConfiguration(
                multi_region_key_type="PRIMARY",
                primary_key=kms_pb2.MultiRegionKey(arn=key.arn, region=key.region),
            )
        )
    return meta


def _alias_entry(alias: Alias) -> kms_pb2.AliasListEntry:
    entry = kms_pb2.AliasListEntry(alias_name=alias.alias_name, alias_arn=alias.alias_arn)
    if alias.target_key_id is not None:
        entry.target_key_id = alias.target_key_id
    if alias.created_at is not None:
        entry.creation_date.CopyFrom(_ts(alias.created_at))
    if alias.updated_at is not None:
        entry.last_updated_date.CopyFrom(_ts(alias.updated_at))
    return entry


class KmsServicer(kms_pb2_grpc.KeyManagementServiceServicer):
    def __init__(self, app: KmsApp) -> None:
        self._app = app

    async def CreateKey(self, request: kms_pb2.CreateKeyRequest, context: Any) -> kms_pb2.CreateKeyResponse:
        key = await self._app.for_call().create_key(
            description=_opt(request, "description"),
            key_usage=_opt(request, "key_usage"),
            key_spec=_opt(request, "key_spec"),
            customer_master_key_spec=_opt(request, "customer_master_key_spec"),
            origin=_opt(request, "origin"),
            tags=[Tag(key=t.tag_key, value=t.tag_value) for t in request.tags],
            multi_region=request.multi_region,
            policy=_opt(request, "policy"),
            bypass_lockout_check=request.bypass_policy_lockout_safety_check,
        )
        return kms_pb2.CreateKeyResponse(key_metadata=key_metadata(key))

    async def DescribeKey(
        self, request: kms_pb2.DescribeKeyRequest, context: Any
    ) -> kms_pb2.DescribeKeyResponse:
        key = await self._app.for_call().describe_key(key_id=request.key_id)
        return kms_pb2.DescribeKeyResponse(key_metadata=key_metadata(key))

    async def ListKeys(self, request: kms_pb2.ListKeysRequest, context: Any) -> kms_pb2.ListKeysResponse:
        page = await self._app.for_call().list_keys(
            limit=_opt(request, "limit"), marker=_opt(request, "marker")
        )
        response = kms_pb2.ListKeysResponse(
            keys=[kms_pb2.KeyListEntry(key_id=kid, key_arn=arn) for kid, arn in page.items],
            truncated=page.truncated,
        )
        if page.next_marker is not None:
            response.next_marker = page.next_marker
        return response

    async def EnableKey(self, request: kms_pb2.EnableKeyRequest, context: Any) -> kms_pb2.EnableKeyResponse:
        await self._app.for_call().enable_key(key_id=request.key_id)
        return kms_pb2.EnableKeyResponse()

    async def DisableKey(
        self, request: kms_pb2.DisableKeyRequest, context: Any
    ) -> kms_pb2.DisableKeyResponse:
        await self._app.for_call().disable_key(key_id=request.key_id)
        return kms_pb2.DisableKeyResponse()

    async def ScheduleKeyDeletion(
        self, request: kms_pb2.ScheduleKeyDeletionRequest, context: Any
    ) -> kms_pb2.ScheduleKeyDeletionResponse:
        result = await self._app.for_call().schedule_key_deletion(
            key_id=request.key_id, pending_window_in_days=_opt(request, "pending_window_in_days")
        )
        assert result.key.deletion_date is not None
        return kms_pb2.ScheduleKeyDeletionResponse(
            key_id=result.key.arn,
            deletion_date=_ts(result.key.deletion_date),
            key_state=result.key.key_state.value,
            pending_window_in_days=result.pending_window_in_days,
        )

    async def CancelKeyDeletion(
        self, request: kms_pb2.CancelKeyDeletionRequest, context: Any
    ) -> kms_pb2.CancelKeyDeletionResponse:
        key = await self._app.for_call().cancel_key_deletion(key_id=request.key_id)
        return kms_pb2.CancelKeyDeletionResponse(key_id=key.arn)

    async def CreateAlias(
        self, request: kms_pb2.CreateAliasRequest, context: Any
    ) -> kms_pb2.CreateAliasResponse:
        await self._app.for_call().create_alias(
            alias_name=request.alias_name, target_key_id=request.target_key_id
        )
        return kms_pb2.CreateAliasResponse()

    async def ListAliases(
        self, request: kms_pb2.ListAliasesRequest, context: Any
    ) -> kms_pb2.ListAliasesResponse:
        page = await self._app.for_call().list_aliases(
            key_id=_opt(request, "key_id"), limit=_opt(request, "limit"), marker=_opt(request, "marker")
        )
        response = kms_pb2.ListAliasesResponse(
            aliases=[_alias_entry(a) for a in page.items], truncated=page.truncated
        )
        if page.next_marker is not None:
            response.next_marker = page.next_marker
        return response

    async def DeleteAlias(
        self, request: kms_pb2.DeleteAliasRequest, context: Any
    ) -> kms_pb2.DeleteAliasResponse:
        await self._app.for_call().delete_alias(alias_name=request.alias_name)
        return kms_pb2.DeleteAliasResponse()

    async def EnableKeyRotation(
        self, request: kms_pb2.EnableKeyRotationRequest, context: Any
    ) -> kms_pb2.EnableKeyRotationResponse:
        await self._app.for_call().enable_key_rotation(
            key_id=request.key_id, rotation_period_in_days=_opt(request, "rotation_period_in_days")
        )
        return kms_pb2.EnableKeyRotationResponse()

    async def DisableKeyRotation(
        self, request: kms_pb2.DisableKeyRotationRequest, context: Any
    ) -> kms_pb2.DisableKeyRotationResponse:
        await self._app.for_call().disable_key_rotation(key_id=request.key_id)
        return kms_pb2.DisableKeyRotationResponse()

    async def GetKeyRotationStatus(
        self, request: kms_pb2.GetKeyRotationStatusRequest, context: Any
    ) -> kms_pb2.GetKeyRotationStatusResponse:
        status = await self._app.for_call().get_key_rotation_status(key_id=request.key_id)
        response = kms_pb2.GetKeyRotationStatusResponse(
            key_id=status.key_arn, key_rotation_enabled=status.enabled
        )
        if status.period_days is not None:
            response.rotation_period_in_days = status.period_days
        if status.next_rotation_at is not None:
            response.next_rotation_date.CopyFrom(_ts(status.next_rotation_at))
        return response

    async def RotateKeyOnDemand(
        self, request: kms_pb2.RotateKeyOnDemandRequest, context: Any
    ) -> kms_pb2.RotateKeyOnDemandResponse:
        key = await self._app.for_call().rotate_key_on_demand(key_id=request.key_id)
        return kms_pb2.RotateKeyOnDemandResponse(key_id=key.arn)

    async def GenerateDataKey(
        self, request: kms_pb2.GenerateDataKeyRequest, context: Any
    ) -> kms_pb2.GenerateDataKeyResponse:
        result = await self._app.for_call().generate_data_key(
            key_id=request.key_id,
            key_spec=_opt(request, "key_spec"),
            number_of_bytes=_opt(request, "number_of_bytes"),
            encryption_context=request.encryption_context,
            caller=current_peer(),
        )
        return kms_pb2.GenerateDataKeyResponse(
            ciphertext_blob=result.ciphertext_blob,
            plaintext=result.plaintext,
            key_id=result.key_arn,
            key_material_id=result.key_material_id,
        )

    async def Encrypt(self, request: kms_pb2.EncryptRequest, context: Any) -> kms_pb2.EncryptResponse:
        result = await self._app.for_call().encrypt(
            key_id=request.key_id,
            plaintext=request.plaintext,
            encryption_context=request.encryption_context,
            encryption_algorithm=_opt(request, "encryption_algorithm"),
            caller=current_peer(),
        )
        return kms_pb2.EncryptResponse(
            ciphertext_blob=result.ciphertext_blob,
            key_id=result.key_arn,
            encryption_algorithm=ENCRYPTION_ALGORITHM,
        )

    async def Decrypt(self, request: kms_pb2.DecryptRequest, context: Any) -> kms_pb2.DecryptResponse:
        result = await self._app.for_call().decrypt(
            ciphertext_blob=request.ciphertext_blob,
            key_id=_opt(request, "key_id"),
            encryption_context=request.encryption_context,
            encryption_algorithm=_opt(request, "encryption_algorithm"),
            caller=current_peer(),
        )
        return kms_pb2.DecryptResponse(
            key_id=result.key_arn,
            plaintext=result.plaintext,
            encryption_algorithm=ENCRYPTION_ALGORITHM,
            key_material_id=result.key_material_id,
        )

    async def GetKeyPolicy(
        self, request: kms_pb2.GetKeyPolicyRequest, context: Any
    ) -> kms_pb2.GetKeyPolicyResponse:
        policy, name = await self._app.for_call().get_key_policy(
            key_id=request.key_id, policy_name=_opt(request, "policy_name")
        )
        return kms_pb2.GetKeyPolicyResponse(policy=policy, policy_name=name)

    async def PutKeyPolicy(
        self, request: kms_pb2.PutKeyPolicyRequest, context: Any
    ) -> kms_pb2.PutKeyPolicyResponse:
        await self._app.for_call().put_key_policy(
            key_id=request.key_id,
            policy=request.policy,
            policy_name=_opt(request, "policy_name"),
            bypass_lockout_check=request.bypass_policy_lockout_safety_check,
        )
        return kms_pb2.PutKeyPolicyResponse()
