"""``coffer.api.store.v1.SecretStoreService``: converts the public ``coffer.api.secrets.v1`` messages to
domain calls on :class:`~coffer.store.app.StoreApp` and back. Nothing else happens here (errors are
CofferErrors, mapped by the server interceptor). Omitted fields stay unset (proto3 optional presence)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from coffer.api.replication.v1 import replication_pb2 as rpb
from coffer.api.replication.v1 import replication_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.api.store.v1 import store_pb2, store_pb2_grpc
from coffer.core import errors
from coffer.core.listing import ListFilter
from coffer.core.model import ReplicationStatus, RotationRules, Secret, SecretVersion, Tag
from coffer.core.secret_keys import RequestParams
from coffer.pgnotify import NotifyHub
from coffer.rpc.context import current_peer
from coffer.store import snapshot
from coffer.store.app import StoreApp, ValueResult
from coffer.store.due_rotations import watch_rotation_requests
from coffer.store.records import AttemptRow, FunctionRow
from coffer.store.replication import ReplicationApp
from coffer.store.rotation import Job, RotationApp
from coffer.store.watch import SecretWatch

REPLICATOR_PREFIX = "replicator."
SM = "secretsmanager:"

DEFAULT_KMS_KEY_IDS = ("DefaultEncryptionKey",)


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _set_ts(ts: timestamp_pb2.Timestamp, value: datetime | date | None) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        value = datetime.combine(value, time.min, tzinfo=UTC)
    ts.FromDatetime(value.astimezone(UTC))


def _filters(filters: Any) -> list[ListFilter]:
    return [ListFilter(key=f.key, values=tuple(f.values)) for f in filters]


def _tags(tags: Any) -> list[Tag]:
    return [Tag(key=t.key, value=t.value) for t in tags]


def _fill_secret(out: Any, secret: Secret, *, stages_field: str) -> None:
    """The fields DescribeSecretResponse and SecretListEntry share."""
    out.arn = secret.arn
    out.name = secret.name
    if secret.type is not None:
        out.type = secret.type
    if secret.description:
        out.description = secret.description
    if secret.kms_key_id is not None:
        out.kms_key_id = secret.kms_key_id
    if secret.rotation_enabled is not None:
        out.rotation_enabled = secret.rotation_enabled
    if secret.rotation_lambda_arn is not None:
        out.rotation_lambda_arn = secret.rotation_lambda_arn
    snapshot.fill_rotation_rules(out, secret.rotation_rules)
    _set_ts(out.last_rotated_date, secret.last_rotated_date)
    _set_ts(out.last_changed_date, secret.last_changed_date)
    _set_ts(out.last_accessed_date, secret.last_accessed_date)
    _set_ts(out.deleted_date, secret.deleted_date)
    _set_ts(out.next_rotation_date, secret.next_rotation_date)
    if secret.tags is not None:
        out.tags.SetInParent()
        out.tags.tags.extend(pb.Tag(key=t.key, value=t.value) for t in secret.tags)
    stages = getattr(out, stages_field)
    for vid, labels in secret.version_ids_to_stages.items():
        stages[vid].stages.extend(labels)
    if secret.owning_service is not None:
        out.owning_service = secret.owning_service
    _set_ts(out.created_date, secret.created_date)
    if secret.primary_region is not None:
        out.primary_region = secret.primary_region


def _fill_value(out: Any, result: ValueResult) -> None:
    out.arn = result.arn
    out.name = result.name
    out.version_id = result.version_id
    if result.value.kind == "string":
        out.secret_string = result.value.text
    else:
        out.secret_binary = result.value.data
    out.version_stages.extend(result.stages)
    _set_ts(out.created_date, result.created_date)


def _version_entry(version: SecretVersion) -> pb.SecretVersionsListEntry:
    entry = pb.SecretVersionsListEntry(version_id=version.version_id)
    entry.version_stages.extend(version.stages)
    _set_ts(entry.last_accessed_date, version.last_accessed_date)
    _set_ts(entry.created_date, version.created_date)
    if version.default_key or version.kms_key_arn is None:
        entry.kms_key_ids.extend(DEFAULT_KMS_KEY_IDS)
    else:
        entry.kms_key_ids.append(version.kms_key_arn)
    return entry


def _rules(request: pb.RotateSecretRequest) -> RotationRules | None:
    if not request.HasField("rotation_rules"):
        return None
    r = request.rotation_rules
    return RotationRules(
        automatically_after_days=_opt(r, "automatically_after_days"),
        duration=_opt(r, "duration"),
        schedule_expression=_opt(r, "schedule_expression"),
    )


def _attempt(out: pb.RotationAttempt, attempt: AttemptRow) -> None:
    out.version_id = attempt.token
    out.status = attempt.status
    out.rotator = attempt.rotator
    out.rotate_immediately = attempt.rotate_immediately
    out.tries = attempt.tries
    _set_ts(out.requested_date, attempt.requested)
    _set_ts(out.started_date, attempt.started)
    _set_ts(out.finished_date, attempt.finished)
    if attempt.open:
        _set_ts(out.next_try_date, attempt.next_try)
    if attempt.error is not None:
        out.error = attempt.error
    for step in attempt.steps:
        rec = out.steps.add(step=step.step, status=step.status, try_number=step.try_number)
        _set_ts(rec.started_date, step.started)
        _set_ts(rec.finished_date, step.finished)
        if step.error is not None:
            rec.error = step.error


def _function(out: pb.RotationFunction, fn: FunctionRow) -> None:
    out.arn = fn.arn
    out.name = fn.name
    out.endpoint = fn.endpoint
    out.ca_pem = fn.ca_pem
    if fn.server_name is not None:
        out.server_name = fn.server_name
    _set_ts(out.created_date, fn.created)


def _job(job: Job) -> store_pb2.RotationJob:
    return store_pb2.RotationJob(
        secret_arn=job.secret_arn,
        token=job.token,
        rotator=job.rotator,
        rotate_immediately=job.rotate_immediately,
        try_number=job.try_number,
    )


def _statuses(out: Any, statuses: Sequence[ReplicationStatus]) -> None:
    for status in statuses:
        entry = out.add(region=status.region, status=status.status)
        if status.kms_key_id is not None:
            entry.kms_key_id = status.kms_key_id
        if status.status_message is not None:
            entry.status_message = status.status_message
        _set_ts(entry.last_accessed_date, status.last_accessed_date)


def _caller_region() -> str:
    """The region of the calling replicator (its identity is ``replicator.<region>``; the interceptor
    already allowed only peer replicators here)."""
    identity = current_peer() or ""
    if not identity.startswith(REPLICATOR_PREFIX):
        raise errors.AccessDenied(f"Service identity {identity or '(none)'} is not a replicator.")
    return identity.removeprefix(REPLICATOR_PREFIX)


class ReplicationServicer(replication_pb2_grpc.ReplicationServiceServicer):
    """``coffer.api.replication.v1.ReplicationService``: what peer regions' replicators call."""

    def __init__(self, replication: ReplicationApp) -> None:
        self._replication = replication

    async def ApplyChanges(
        self, request: rpb.ApplyChangesRequest, context: grpc.aio.ServicerContext
    ) -> rpb.ApplyChangesResponse:
        outcomes = await self._replication.apply_changes(
            source_region=request.source_region,
            caller_region=_caller_region(),
            changes=[snapshot.from_proto(ch) for ch in request.changes],
        )
        resp = rpb.ApplyChangesResponse()
        for o in outcomes:
            result = resp.results.add(primary_arn=o.primary_arn, seq=o.seq, status=o.status)
            if o.message is not None:
                result.message = o.message
        return resp

    async def DetachReplica(
        self, request: rpb.DetachReplicaRequest, context: grpc.aio.ServicerContext
    ) -> rpb.DetachReplicaResponse:
        await self._replication.detach_replica(
            primary_arn=request.primary_arn,
            replica_region=request.replica_region,
            caller_region=_caller_region(),
        )
        return rpb.DetachReplicaResponse()


class SecretStoreServicer(store_pb2_grpc.SecretStoreServiceServicer):
    def __init__(
        self,
        app: StoreApp,
        rotation: RotationApp,
        replication: ReplicationApp,
        watch: SecretWatch | None = None,
    ) -> None:
        self._app = app
        self._rotation = rotation
        self._replication = replication
        self._watch = watch

    async def _authorize(self, action: str, secret_id: str, params: RequestParams | None = None) -> None:
        """Decide the public call's action on its secret first (coffer.store.authz)."""
        await self._app.authorize_secret(SM + action, secret_id, params)

    def _authorize_global(self, action: str) -> None:
        caller = self._app.authz.caller()
        if caller is not None:
            self._app.authz.check_global(caller, SM + action)

    # --- the change stream ----------------------------------------------------------------------------------

    async def WatchSecrets(
        self, request: pb.WatchSecretsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SecretChangeEvent]:
        if self._watch is None:
            raise errors.Unavailable("This store does not serve WatchSecrets.")
        events = self._watch.watch(
            resume_token=_opt(request, "resume_token"),
            secret_ids=list(request.secret_ids),
            name_prefix=_opt(request, "name_prefix"),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                out = pb.SecretChangeEvent(resume_token=event.resume_token, kind=event.kind)
                if event.arn:
                    out.arn = event.arn
                    out.name = event.name
                if event.version_id is not None:
                    out.version_id = event.version_id
                out.version_stages.extend(event.version_stages)
                _set_ts(out.event_time, event.event_time)
                if event.detail is not None:
                    out.detail = event.detail
                yield out

    # --- resource policies ----------------------------------------------------------------------------------

    async def PutResourcePolicy(
        self, request: pb.PutResourcePolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutResourcePolicyResponse:
        block = bool(_opt(request, "block_public_policy"))
        await self._authorize(
            "PutResourcePolicy", request.secret_id, RequestParams(block_public_policy=block)
        )
        result = await self._app.put_resource_policy(
            secret_id=request.secret_id,
            resource_policy=request.resource_policy,
            block_public_policy=block,
        )
        return pb.PutResourcePolicyResponse(arn=result.arn, name=result.name)

    async def GetResourcePolicy(
        self, request: pb.GetResourcePolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetResourcePolicyResponse:
        await self._authorize("GetResourcePolicy", request.secret_id)
        arn, name, policy = await self._app.get_resource_policy(secret_id=request.secret_id)
        resp = pb.GetResourcePolicyResponse(arn=arn, name=name)
        if policy is not None:
            resp.resource_policy = policy
        return resp

    async def DeleteResourcePolicy(
        self, request: pb.DeleteResourcePolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteResourcePolicyResponse:
        await self._authorize("DeleteResourcePolicy", request.secret_id)
        result = await self._app.delete_resource_policy(secret_id=request.secret_id)
        return pb.DeleteResourcePolicyResponse(arn=result.arn, name=result.name)

    async def ValidateResourcePolicy(
        self, request: pb.ValidateResourcePolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateResourcePolicyResponse:
        secret_id = _opt(request, "secret_id")
        # needs ValidateResourcePolicy and PutResourcePolicy (on the secret, or * without a SecretId)
        for action in ("ValidateResourcePolicy", "PutResourcePolicy"):
            if secret_id is not None:
                await self._authorize(action, secret_id)
            else:
                self._authorize_global(action)
        result = await self._app.validate_resource_policy(
            secret_id=secret_id, resource_policy=request.resource_policy
        )
        resp = pb.ValidateResourcePolicyResponse(policy_validation_passed=result.passed)
        for err in result.errors:
            resp.validation_errors.add(check_name=err.check_name, error_message=err.error_message)
        return resp

    async def ReplicateSecretToRegions(
        self, request: pb.ReplicateSecretToRegionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplicateSecretToRegionsResponse:
        await self._authorize(
            "ReplicateSecretToRegions",
            request.secret_id,
            RequestParams(
                add_replica_regions=[r.region for r in request.add_replica_regions],
                force_overwrite_replica_secret=request.force_overwrite_replica_secret,
            ),
        )
        result = await self._replication.replicate_secret_to_regions(
            secret_id=request.secret_id,
            regions=[(r.region, _opt(r, "kms_key_id")) for r in request.add_replica_regions],
            force_overwrite=request.force_overwrite_replica_secret,
        )
        resp = pb.ReplicateSecretToRegionsResponse(arn=result.arn)
        _statuses(resp.replication_status, result.statuses)
        return resp

    async def RemoveRegionsFromReplication(
        self, request: pb.RemoveRegionsFromReplicationRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveRegionsFromReplicationResponse:
        await self._authorize("RemoveRegionsFromReplication", request.secret_id)
        result = await self._replication.remove_regions_from_replication(
            secret_id=request.secret_id, regions=list(request.remove_replica_regions)
        )
        resp = pb.RemoveRegionsFromReplicationResponse(arn=result.arn)
        _statuses(resp.replication_status, result.statuses)
        return resp

    async def StopReplicationToReplica(
        self, request: pb.StopReplicationToReplicaRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopReplicationToReplicaResponse:
        await self._authorize("StopReplicationToReplica", request.secret_id)
        arn = await self._replication.stop_replication_to_replica(secret_id=request.secret_id)
        return pb.StopReplicationToReplicaResponse(arn=arn)

    async def CreateSecret(
        self, request: pb.CreateSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateSecretResponse:
        result = await self._app.create_secret(
            name=request.name,
            token=_opt(request, "client_request_token"),
            description=_opt(request, "description"),
            kms_key_id=_opt(request, "kms_key_id"),
            secret_string=_opt(request, "secret_string"),
            secret_binary=_opt(request, "secret_binary"),
            tags=_tags(request.tags),
            replica_regions=[(r.region, _opt(r, "kms_key_id")) for r in request.add_replica_regions],
            type=_opt(request, "type"),
        )
        resp = pb.CreateSecretResponse(arn=result.arn, name=result.name)
        if result.version_id is not None:
            resp.version_id = result.version_id
        if request.add_replica_regions:  # AWS answers with each replica's status (InProgress at first)
            secret = await self._app.describe_secret(secret_id=result.arn)
            _statuses(resp.replication_status, secret.replication_status)
        return resp

    async def DescribeSecret(
        self, request: pb.DescribeSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeSecretResponse:
        await self._authorize("DescribeSecret", request.secret_id)
        secret = await self._app.describe_secret(secret_id=request.secret_id)
        resp = pb.DescribeSecretResponse()
        _fill_secret(resp, secret, stages_field="version_ids_to_stages")
        _statuses(resp.replication_status, secret.replication_status)
        return resp

    async def GetSecretValue(
        self, request: pb.GetSecretValueRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSecretValueResponse:
        result = await self._app.get_secret_value(
            secret_id=request.secret_id,
            version_id=_opt(request, "version_id"),
            version_stage=_opt(request, "version_stage"),
        )
        resp = pb.GetSecretValueResponse()
        _fill_value(resp, result)
        return resp

    async def BatchGetSecretValue(
        self, request: pb.BatchGetSecretValueRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetSecretValueResponse:
        result = await self._app.batch_get_secret_value(
            secret_id_list=list(request.secret_id_list),
            filters=_filters(request.filters),
            max_results=_opt(request, "max_results"),
            next_token=_opt(request, "next_token"),
        )
        resp = pb.BatchGetSecretValueResponse()
        for value in result.values:
            _fill_value(resp.secret_values.add(), value)
        for err in result.errors:
            resp.errors.add(secret_id=err.secret_id, error_code=err.error_code, message=err.message)
        if result.next_token is not None:
            resp.next_token = result.next_token
        return resp

    async def PutSecretValue(
        self, request: pb.PutSecretValueRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutSecretValueResponse:
        # decided by the use case, on the row it locks
        result = await self._app.put_secret_value(
            secret_id=request.secret_id,
            token=_opt(request, "client_request_token"),
            secret_string=_opt(request, "secret_string"),
            secret_binary=_opt(request, "secret_binary"),
            version_stages=list(request.version_stages) or None,
            rotation_token=_opt(request, "rotation_token"),
        )
        resp = pb.PutSecretValueResponse(arn=result.arn, name=result.name, version_id=result.version_id)
        resp.version_stages.extend(result.stages)
        return resp

    async def UpdateSecret(
        self, request: pb.UpdateSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateSecretResponse:
        await self._authorize(
            "UpdateSecret",
            request.secret_id,
            RequestParams(description=_opt(request, "description"), kms_key_id=_opt(request, "kms_key_id")),
        )
        result = await self._app.update_secret(
            secret_id=request.secret_id,
            token=_opt(request, "client_request_token"),
            description=_opt(request, "description"),
            kms_key_id=_opt(request, "kms_key_id"),
            secret_string=_opt(request, "secret_string"),
            secret_binary=_opt(request, "secret_binary"),
            type=_opt(request, "type"),
        )
        resp = pb.UpdateSecretResponse(arn=result.arn, name=result.name)
        if result.version_id is not None:
            resp.version_id = result.version_id
        return resp

    async def UpdateSecretVersionStage(
        self, request: pb.UpdateSecretVersionStageRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateSecretVersionStageResponse:
        await self._authorize(
            "UpdateSecretVersionStage", request.secret_id, RequestParams(version_stage=request.version_stage)
        )
        result = await self._app.update_secret_version_stage(
            secret_id=request.secret_id,
            version_stage=request.version_stage,
            remove_from_version_id=_opt(request, "remove_from_version_id"),
            move_to_version_id=_opt(request, "move_to_version_id"),
        )
        return pb.UpdateSecretVersionStageResponse(arn=result.arn, name=result.name)

    async def ListSecrets(
        self, request: pb.ListSecretsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSecretsResponse:
        result = await self._app.list_secrets(
            include_planned_deletion=request.include_planned_deletion,
            max_results=_opt(request, "max_results"),
            next_token=_opt(request, "next_token"),
            filters=_filters(request.filters),
            sort_order=_opt(request, "sort_order"),
            sort_by=_opt(request, "sort_by"),
        )
        resp = pb.ListSecretsResponse()
        for secret in result.secrets:
            _fill_secret(resp.secret_list.add(), secret, stages_field="secret_versions_to_stages")
        if result.next_token is not None:
            resp.next_token = result.next_token
        return resp

    async def ListSecretVersionIds(
        self, request: pb.ListSecretVersionIdsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSecretVersionIdsResponse:
        await self._authorize("ListSecretVersionIds", request.secret_id)
        result = await self._app.list_secret_version_ids(
            secret_id=request.secret_id,
            max_results=_opt(request, "max_results"),
            next_token=_opt(request, "next_token"),
            include_deprecated=request.include_deprecated,
        )
        resp = pb.ListSecretVersionIdsResponse(arn=result.arn, name=result.name)
        resp.versions.extend(_version_entry(ver) for ver in result.versions)
        if result.next_token is not None:
            resp.next_token = result.next_token
        return resp

    async def DeleteSecret(
        self, request: pb.DeleteSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSecretResponse:
        await self._authorize(
            "DeleteSecret",
            request.secret_id,
            RequestParams(
                force_delete_without_recovery=bool(_opt(request, "force_delete_without_recovery")),
                recovery_window_in_days=_opt(request, "recovery_window_in_days"),
            ),
        )
        result = await self._app.delete_secret(
            secret_id=request.secret_id,
            recovery_window_in_days=_opt(request, "recovery_window_in_days"),
            force_delete_without_recovery=_opt(request, "force_delete_without_recovery"),
        )
        resp = pb.DeleteSecretResponse(arn=result.arn, name=result.name)
        _set_ts(resp.deletion_date, result.deletion_date)
        return resp

    async def RestoreSecret(
        self, request: pb.RestoreSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestoreSecretResponse:
        await self._authorize("RestoreSecret", request.secret_id)
        result = await self._app.restore_secret(secret_id=request.secret_id)
        return pb.RestoreSecretResponse(arn=result.arn, name=result.name)

    async def TagResource(
        self, request: pb.TagResourceRequest, context: grpc.aio.ServicerContext
    ) -> pb.TagResourceResponse:
        await self._authorize(
            "TagResource", request.secret_id, RequestParams(request_tags=_tags(request.tags))
        )
        await self._app.tag_resource(secret_id=request.secret_id, tags=_tags(request.tags))
        return pb.TagResourceResponse()

    async def UntagResource(
        self, request: pb.UntagResourceRequest, context: grpc.aio.ServicerContext
    ) -> pb.UntagResourceResponse:
        await self._authorize(
            "UntagResource", request.secret_id, RequestParams(tag_keys=list(request.tag_keys))
        )
        await self._app.untag_resource(secret_id=request.secret_id, tag_keys=list(request.tag_keys))
        return pb.UntagResourceResponse()

    # --- rotation -------------------------------------------------------------------------------------------

    async def RotateSecret(
        self, request: pb.RotateSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSecretResponse:
        await self._authorize(
            "RotateSecret",
            request.secret_id,
            RequestParams(
                rotation_lambda_arn=_opt(request, "rotation_lambda_arn"),
                rotate_immediately=_opt(request, "rotate_immediately") is not False,
                modify_rotation_rules=request.HasField("rotation_rules"),
            ),
        )
        result = await self._rotation.rotate_secret(
            secret_id=request.secret_id,
            token=_opt(request, "client_request_token"),
            rotation_lambda_arn=_opt(request, "rotation_lambda_arn"),
            rules=_rules(request),
            rotate_immediately=_opt(request, "rotate_immediately"),
        )
        resp = pb.RotateSecretResponse(arn=result.arn, name=result.name)
        if result.version_id is not None:
            resp.version_id = result.version_id
        return resp

    async def CancelRotateSecret(
        self, request: pb.CancelRotateSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelRotateSecretResponse:
        await self._authorize("CancelRotateSecret", request.secret_id)
        result = await self._rotation.cancel_rotate_secret(secret_id=request.secret_id)
        resp = pb.CancelRotateSecretResponse(arn=result.arn, name=result.name)
        if result.version_id is not None:
            resp.version_id = result.version_id
        return resp

    async def ListRotationAttempts(
        self, request: pb.ListRotationAttemptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRotationAttemptsResponse:
        await self._authorize("ListRotationAttempts", request.secret_id)
        result = await self._rotation.list_rotation_attempts(
            secret_id=request.secret_id,
            max_results=_opt(request, "max_results"),
            next_token=_opt(request, "next_token"),
        )
        resp = pb.ListRotationAttemptsResponse(arn=result.arn, name=result.name)
        for attempt in result.attempts:
            _attempt(resp.attempts.add(), attempt)
        if result.next_token is not None:
            resp.next_token = result.next_token
        return resp

    async def RegisterRotationFunction(
        self, request: pb.RegisterRotationFunctionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterRotationFunctionResponse:
        self._authorize_global("RegisterRotationFunction")
        fn = await self._rotation.register_function(
            name=request.name,
            endpoint=request.endpoint,
            ca_pem=request.ca_pem,
            server_name=_opt(request, "server_name"),
        )
        resp = pb.RegisterRotationFunctionResponse()
        _function(resp.function, fn)
        return resp

    async def ListRotationFunctions(
        self, request: pb.ListRotationFunctionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRotationFunctionsResponse:
        self._authorize_global("ListRotationFunctions")
        resp = pb.ListRotationFunctionsResponse()
        for fn in await self._rotation.list_functions():
            _function(resp.functions.add(), fn)
        return resp

    async def DeleteRotationFunction(
        self, request: pb.DeleteRotationFunctionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRotationFunctionResponse:
        self._authorize_global("DeleteRotationFunction")
        await self._rotation.delete_function(function_id=request.function_id)
        return pb.DeleteRotationFunctionResponse()


class RotationControlServicer(store_pb2_grpc.RotationControlServiceServicer):
    """``coffer.api.store.v1.RotationControlService``: the rotation service's bookkeeping (peer ``rotation``
    only)."""

    def __init__(self, rotation: RotationApp, requests: NotifyHub) -> None:
        self._rotation = rotation
        self._requests = requests

    async def WatchRotationRequests(
        self, request: store_pb2.WatchRotationRequestsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[store_pb2.WatchRotationRequestsResponse]:
        async for wake in watch_rotation_requests(self._requests, context):
            yield wake

    async def ClaimDueRotations(
        self, request: store_pb2.ClaimDueRotationsRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.ClaimDueRotationsResponse:
        jobs = await self._rotation.claim_due(limit=request.limit)
        return store_pb2.ClaimDueRotationsResponse(jobs=[_job(j) for j in jobs])

    async def AcquireRotationLease(
        self, request: store_pb2.AcquireRotationLeaseRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.AcquireRotationLeaseResponse:
        lease = await self._rotation.acquire_lease(
            arn=request.secret_arn,
            token=request.token,
            worker_id=request.worker_id,
            lease_seconds=request.lease_seconds,
        )
        resp = store_pb2.AcquireRotationLeaseResponse(acquired=lease.acquired, reason=lease.reason)
        if lease.job is not None:
            resp.job.CopyFrom(_job(lease.job))
        return resp

    async def RecordRotationStep(
        self, request: store_pb2.RecordRotationStepRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.RecordRotationStepResponse:
        await self._rotation.record_step(
            arn=request.secret_arn,
            token=request.token,
            worker_id=request.worker_id,
            step=request.step,
            status=request.status,
            error=_opt(request, "error"),
        )
        return store_pb2.RecordRotationStepResponse()

    async def CompleteRotation(
        self, request: store_pb2.CompleteRotationRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.CompleteRotationResponse:
        await self._rotation.complete(
            arn=request.secret_arn, token=request.token, worker_id=request.worker_id
        )
        return store_pb2.CompleteRotationResponse()

    async def FailRotationTry(
        self, request: store_pb2.FailRotationTryRequest, context: grpc.aio.ServicerContext
    ) -> store_pb2.FailRotationTryResponse:
        outcome = await self._rotation.fail_try(
            arn=request.secret_arn, token=request.token, worker_id=request.worker_id, error=request.error
        )
        return store_pb2.FailRotationTryResponse(
            final=outcome.final, next_try_seconds=outcome.next_try_seconds
        )
