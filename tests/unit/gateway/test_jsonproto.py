"""AWS JSON 1.1 ⇄ proto (coffer.gateway.aws.jsonproto), proved against botocore's own service models,
serializer and parser: what AWS's SDK sends reaches the right fields, and what Coffer answers parses."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, cast

import botocore.parsers
import botocore.serialize
import botocore.session
import pytest
from botocore.model import OperationModel, ServiceModel, Shape
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.gateway.aws.jsonproto import (
    COFFER_ONLY,
    TARGETS,
    member_name,
    request_from_json,
    response_to_json,
)

_SESSION = botocore.session.get_session()
MODELS: dict[str, ServiceModel] = {
    "secretsmanager": _SESSION.get_service_model("secretsmanager"),
    "TrentService": _SESSION.get_service_model("kms"),
}
SERVICES = {
    "secretsmanager": sm.DESCRIPTOR.services_by_name["SecretsManagerService"],
    "TrentService": kms_pb2.DESCRIPTOR.services_by_name["KeyManagementService"],
}

#: Every AWS member (``Operation.Input|Output.path``) Coffer's messages have no field for. A new gap (a
#: member renamed away, a field dropped) fails the test; so does closing one without updating this list.
#: Inputs: a client sending one of these is served as if it had not (KMS's GrantTokens/DryRun, custom key
#: stores, cross-account replicas, managed external secrets, named resource policies).
UNSUPPORTED_INPUT: frozenset[str] = frozenset(
    {
        "TrentService.CreateKey.Input.CustomKeyStoreId",
        "TrentService.CreateKey.Input.XksKeyId",
        "TrentService.Decrypt.Input.DryRun",
        "TrentService.Decrypt.Input.DryRunModifiers",
        "TrentService.Decrypt.Input.GrantTokens",
        "TrentService.Decrypt.Input.Recipient",
        "TrentService.DescribeKey.Input.GrantTokens",
        "TrentService.Encrypt.Input.DryRun",
        "TrentService.Encrypt.Input.GrantTokens",
        "TrentService.GenerateDataKey.Input.DryRun",
        "TrentService.GenerateDataKey.Input.GrantTokens",
        "TrentService.GenerateDataKey.Input.Recipient",
        "TrentService.ListKeys.Input.ResourceOwners",
        "secretsmanager.CreateSecret.Input.CrossAccountPrimaryARN",
        "secretsmanager.DeleteResourcePolicy.Input.PolicyName",
        "secretsmanager.GetResourcePolicy.Input.PolicyName",
        "secretsmanager.PutResourcePolicy.Input.PolicyName",
        "secretsmanager.RotateSecret.Input.ExternalSecretRotationMetadata",
        "secretsmanager.RotateSecret.Input.ExternalSecretRotationRoleArn",
    }
)
#: Outputs AWS may send and Coffer never does (boto3 simply has no such key in its result).
UNSUPPORTED_OUTPUT: frozenset[str] = frozenset(
    {
        "TrentService.CreateKey.Output.KeyMetadata.CloudHsmClusterId",
        "TrentService.CreateKey.Output.KeyMetadata.CustomKeyStoreId",
        "TrentService.CreateKey.Output.KeyMetadata.EncapsulationAlgorithms",
        "TrentService.CreateKey.Output.KeyMetadata.ExpirationModel",
        "TrentService.CreateKey.Output.KeyMetadata.KeyAgreementAlgorithms",
        "TrentService.CreateKey.Output.KeyMetadata.MacAlgorithms",
        "TrentService.CreateKey.Output.KeyMetadata.PendingDeletionWindowInDays",
        "TrentService.CreateKey.Output.KeyMetadata.SigningAlgorithms",
        "TrentService.CreateKey.Output.KeyMetadata.ValidTo",
        "TrentService.CreateKey.Output.KeyMetadata.XksKeyConfiguration",
        "TrentService.Decrypt.Output.CiphertextForRecipient",
        "TrentService.DescribeKey.Output.KeyMetadata.CloudHsmClusterId",
        "TrentService.DescribeKey.Output.KeyMetadata.CustomKeyStoreId",
        "TrentService.DescribeKey.Output.KeyMetadata.EncapsulationAlgorithms",
        "TrentService.DescribeKey.Output.KeyMetadata.ExpirationModel",
        "TrentService.DescribeKey.Output.KeyMetadata.KeyAgreementAlgorithms",
        "TrentService.DescribeKey.Output.KeyMetadata.MacAlgorithms",
        "TrentService.DescribeKey.Output.KeyMetadata.PendingDeletionWindowInDays",
        "TrentService.DescribeKey.Output.KeyMetadata.SigningAlgorithms",
        "TrentService.DescribeKey.Output.KeyMetadata.ValidTo",
        "TrentService.DescribeKey.Output.KeyMetadata.XksKeyConfiguration",
        "TrentService.GenerateDataKey.Output.CiphertextForRecipient",
        "TrentService.GetKeyRotationStatus.Output.OnDemandRotationStartDate",
        "secretsmanager.DeleteResourcePolicy.Output.PolicyName",
        "secretsmanager.DescribeSecret.Output.CrossAccountPrimary",
        "secretsmanager.DescribeSecret.Output.CrossAccountReplicas",
        "secretsmanager.DescribeSecret.Output.ExternalSecretRotationMetadata",
        "secretsmanager.DescribeSecret.Output.ExternalSecretRotationRoleArn",
        "secretsmanager.GetResourcePolicy.Output.PolicyName",
        "secretsmanager.ListSecrets.Output.SecretList[].ExternalSecretRotationMetadata",
        "secretsmanager.ListSecrets.Output.SecretList[].ExternalSecretRotationRoleArn",
        "secretsmanager.PutResourcePolicy.Output.PolicyName",
    }
)
UNSUPPORTED = UNSUPPORTED_INPUT | UNSUPPORTED_OUTPUT

_SCALAR_TYPES: dict[int, set[str]] = {
    FieldDescriptor.TYPE_STRING: {"string"},
    FieldDescriptor.TYPE_BOOL: {"boolean"},
    FieldDescriptor.TYPE_BYTES: {"blob"},
    FieldDescriptor.TYPE_INT32: {"integer"},
    FieldDescriptor.TYPE_INT64: {"long", "integer"},
    FieldDescriptor.TYPE_ENUM: {"string"},
}


def _operation(target: str) -> OperationModel:
    prefix, name = target.split(".", 1)
    return MODELS[prefix].operation_model(name)


def _method_messages(target: str) -> tuple[type[Message], type[Message]]:
    prefix, name = target.split(".", 1)
    method = SERVICES[prefix].methods_by_name[name]
    return GetMessageClass(method.input_type), GetMessageClass(method.output_type)


def _compare(message: Descriptor, shape: Shape, path: str, gaps: set[str], problems: list[str]) -> None:
    """Every field of ``message`` must map to a member of ``shape`` of a compatible type; the members of
    ``shape`` with no field are added to ``gaps``."""
    members: dict[str, Shape] = dict(shape.members)
    mapped: set[str] = set()
    for field in message.fields:
        member = member_name(field)
        where = f"{path}.{member}"
        if member not in members:
            problems.append(f"{where}: field {field.full_name} has no AWS member")
            continue
        mapped.add(member)
        _compare_value(field, members[member], where, gaps, problems)
    gaps.update(f"{path}.{member}" for member in members if member not in mapped)


def _compare_value(
    field: FieldDescriptor, shape: Shape, where: str, gaps: set[str], problems: list[str]
) -> None:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        if shape.type_name != "map":
            problems.append(f"{where}: a map in Coffer, {shape.type_name} in AWS")
            return
        value_field = message.fields_by_name["value"]
        _compare_single(value_field, shape.value, f"{where}{{}}", gaps, problems)
        return
    if field.is_repeated:
        if shape.type_name != "list":
            problems.append(f"{where}: a list in Coffer, {shape.type_name} in AWS")
            return
        _compare_single(field, shape.member, f"{where}[]", gaps, problems)
        return
    _compare_single(field, shape, where, gaps, problems)


def _compare_single(
    field: FieldDescriptor, shape: Shape, where: str, gaps: set[str], problems: list[str]
) -> None:
    message = field.message_type
    if message is None:
        if shape.type_name not in _SCALAR_TYPES[field.type]:
            problems.append(f"{where}: {field.type} in Coffer, {shape.type_name} in AWS")
        return
    if message.full_name == Timestamp.DESCRIPTOR.full_name:
        if shape.type_name != "timestamp":
            problems.append(f"{where}: a timestamp in Coffer, {shape.type_name} in AWS")
        return
    if message.full_name in ("coffer.api.secrets.v1.TagSet", "coffer.api.secrets.v1.VersionStages"):
        (inner,) = message.fields
        if shape.type_name != "list":
            problems.append(f"{where}: a list wrapper in Coffer, {shape.type_name} in AWS")
            return
        _compare_single(inner, shape.member, f"{where}[]", gaps, problems)
        return
    if shape.type_name != "structure":
        problems.append(f"{where}: a message in Coffer, {shape.type_name} in AWS")
        return
    _compare(message, shape, where, gaps, problems)


def test_targets_are_every_aws_operation_coffer_has() -> None:
    for prefix, service in SERVICES.items():
        aws = set(MODELS[prefix].operation_names)
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            target = f"{prefix}.{method.name}"
            if full in COFFER_ONLY:
                assert method.name not in aws, f"{method.name} is an AWS operation: serve it"
                assert target not in TARGETS
            else:
                assert method.name in aws, f"{method.name} is not an AWS {prefix} operation"
                assert TARGETS[target] == full
    assert len(TARGETS) == sum(len(s.methods) for s in SERVICES.values()) - len(COFFER_ONLY)
    assert (
        TARGETS["secretsmanager.GetSecretValue"]
        == "/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue"
    )
    assert TARGETS["TrentService.Decrypt"] == "/coffer.api.kms.v1.KeyManagementService/Decrypt"


def test_every_field_maps_to_an_aws_member_and_the_gaps_are_the_listed_ones() -> None:
    gaps: set[str] = set()
    problems: list[str] = []
    for target in TARGETS:
        operation = _operation(target)
        request, response = _method_messages(target)
        assert operation.input_shape is not None
        _compare(
            cast(Descriptor, request.DESCRIPTOR), operation.input_shape, f"{target}.Input", gaps, problems
        )
        if operation.output_shape is None:
            assert not response.DESCRIPTOR.fields, f"{target}: AWS has no output, Coffer answers fields"
        else:
            _compare(
                cast(Descriptor, response.DESCRIPTOR),
                operation.output_shape,
                f"{target}.Output",
                gaps,
                problems,
            )
    assert problems == []
    assert sorted(gaps) == sorted(UNSUPPORTED)


# ---------------------------------------------------------------------------------------- round trips


def _botocore_body(target: str, params: dict[str, Any]) -> Any:
    """The parsed JSON body botocore sends for ``params`` (its own serializer, with its validation)."""
    operation = _operation(target)
    request = botocore.serialize.create_serializer("json").serialize_to_request(params, operation)
    assert request["headers"]["X-Amz-Target"] == target
    return json.loads(request["body"] or b"{}")


def _botocore_parse(target: str, body: dict[str, Any]) -> dict[str, Any]:
    """What boto3 returns to its caller for this response body."""
    operation = _operation(target)
    parsed: dict[str, Any] = botocore.parsers.create_parser("json").parse(
        {"body": json.dumps(body).encode(), "headers": {}, "status_code": 200}, operation.output_shape
    )
    parsed.pop("ResponseMetadata", None)
    return parsed


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


TOKEN = "9c0f2a5e-7a43-4d1e-8f0e-2b1f6b1f4a11"

REQUESTS: list[tuple[str, dict[str, Any], Message]] = [
    (
        "secretsmanager.CreateSecret",
        {
            "Name": "prod/db",
            "ClientRequestToken": TOKEN,
            "Description": "",
            "KmsKeyId": "alias/app",
            "SecretBinary": b"\x00\x01\xfebinary",
            "Tags": [{"Key": "team", "Value": "core"}, {"Key": "empty", "Value": ""}],
            "AddReplicaRegions": [{"Region": "local-2", "KmsKeyId": "alias/b"}, {"Region": "local-3"}],
            "ForceOverwriteReplicaSecret": True,
            "Type": "custom",
        },
        sm.CreateSecretRequest(
            name="prod/db",
            client_request_token=TOKEN,
            description="",
            kms_key_id="alias/app",
            secret_binary=b"\x00\x01\xfebinary",
            tags=[sm.Tag(key="team", value="core"), sm.Tag(key="empty", value="")],
            add_replica_regions=[
                sm.ReplicaRegion(region="local-2", kms_key_id="alias/b"),
                sm.ReplicaRegion(region="local-3"),
            ],
            force_overwrite_replica_secret=True,
            type="custom",
        ),
    ),
    ("secretsmanager.DescribeSecret", {"SecretId": "prod/db"}, sm.DescribeSecretRequest(secret_id="prod/db")),
    (
        "secretsmanager.GetSecretValue",
        {"SecretId": "arn:aws:secretsmanager:local-1:1:secret:a-AbCdEf", "VersionStage": "AWSPREVIOUS"},
        sm.GetSecretValueRequest(
            secret_id="arn:aws:secretsmanager:local-1:1:secret:a-AbCdEf", version_stage="AWSPREVIOUS"
        ),
    ),
    (
        "secretsmanager.BatchGetSecretValue",
        {
            "Filters": [{"Key": "tag-key", "Values": ["team", "!ops"]}],
            "MaxResults": 20,
            "NextToken": "tok",
        },
        sm.BatchGetSecretValueRequest(
            filters=[sm.Filter(key="tag-key", values=["team", "!ops"])], max_results=20, next_token="tok"
        ),
    ),
    (
        "secretsmanager.BatchGetSecretValue",
        {"SecretIdList": ["a", "b"]},
        sm.BatchGetSecretValueRequest(secret_id_list=["a", "b"]),
    ),
    (
        "secretsmanager.PutSecretValue",
        {
            "SecretId": "a",
            "ClientRequestToken": TOKEN,
            "SecretString": '{"password":"é✓"}',
            "VersionStages": ["AWSCURRENT", "blue"],
            "RotationToken": "r" * 36,
        },
        sm.PutSecretValueRequest(
            secret_id="a",
            client_request_token=TOKEN,
            secret_string='{"password":"é✓"}',
            version_stages=["AWSCURRENT", "blue"],
            rotation_token="r" * 36,
        ),
    ),
    (
        "secretsmanager.UpdateSecret",
        {"SecretId": "a", "ClientRequestToken": TOKEN, "Description": "new", "KmsKeyId": "k"},
        sm.UpdateSecretRequest(secret_id="a", client_request_token=TOKEN, description="new", kms_key_id="k"),
    ),
    (
        "secretsmanager.UpdateSecretVersionStage",
        {
            "SecretId": "a",
            "VersionStage": "AWSCURRENT",
            "MoveToVersionId": TOKEN,
            "RemoveFromVersionId": "x" * 32,
        },
        sm.UpdateSecretVersionStageRequest(
            secret_id="a",
            version_stage="AWSCURRENT",
            move_to_version_id=TOKEN,
            remove_from_version_id="x" * 32,
        ),
    ),
    (
        "secretsmanager.ListSecrets",
        {
            "IncludePlannedDeletion": True,
            "MaxResults": 5,
            "NextToken": "n",
            "Filters": [{"Key": "name", "Values": ["prod/"]}, {"Key": "all", "Values": ["x"]}],
            "SortOrder": "asc",
            "SortBy": "name",
        },
        sm.ListSecretsRequest(
            include_planned_deletion=True,
            max_results=5,
            next_token="n",
            filters=[sm.Filter(key="name", values=["prod/"]), sm.Filter(key="all", values=["x"])],
            sort_order="asc",
            sort_by="name",
        ),
    ),
    (
        "secretsmanager.ListSecretVersionIds",
        {"SecretId": "a", "MaxResults": 10, "IncludeDeprecated": True},
        sm.ListSecretVersionIdsRequest(secret_id="a", max_results=10, include_deprecated=True),
    ),
    (
        "secretsmanager.DeleteSecret",
        {"SecretId": "a", "RecoveryWindowInDays": 7},
        sm.DeleteSecretRequest(secret_id="a", recovery_window_in_days=7),
    ),
    (
        "secretsmanager.DeleteSecret",
        {"SecretId": "a", "ForceDeleteWithoutRecovery": False},
        sm.DeleteSecretRequest(secret_id="a", force_delete_without_recovery=False),
    ),
    ("secretsmanager.RestoreSecret", {"SecretId": "a"}, sm.RestoreSecretRequest(secret_id="a")),
    (
        "secretsmanager.TagResource",
        {"SecretId": "a", "Tags": [{"Key": "k", "Value": "v"}]},
        sm.TagResourceRequest(secret_id="a", tags=[sm.Tag(key="k", value="v")]),
    ),
    (
        "secretsmanager.UntagResource",
        {"SecretId": "a", "TagKeys": ["k", "j"]},
        sm.UntagResourceRequest(secret_id="a", tag_keys=["k", "j"]),
    ),
    (
        "secretsmanager.GetRandomPassword",
        {
            "PasswordLength": 64,
            "ExcludeCharacters": "\"'",
            "ExcludeNumbers": False,
            "ExcludePunctuation": True,
            "ExcludeUppercase": False,
            "ExcludeLowercase": False,
            "IncludeSpace": True,
            "RequireEachIncludedType": False,
        },
        sm.GetRandomPasswordRequest(
            password_length=64,
            exclude_characters="\"'",
            exclude_numbers=False,
            exclude_punctuation=True,
            exclude_uppercase=False,
            exclude_lowercase=False,
            include_space=True,
            require_each_included_type=False,
        ),
    ),
    (
        "secretsmanager.RotateSecret",
        {
            "SecretId": "a",
            "ClientRequestToken": TOKEN,
            "RotationLambdaARN": "random-value",
            "RotationRules": {"AutomaticallyAfterDays": 30, "Duration": "2h"},
            "RotateImmediately": False,
        },
        sm.RotateSecretRequest(
            secret_id="a",
            client_request_token=TOKEN,
            rotation_lambda_arn="random-value",
            rotation_rules=sm.RotationRules(automatically_after_days=30, duration="2h"),
            rotate_immediately=False,
        ),
    ),
    (
        "secretsmanager.RotateSecret",
        {
            "SecretId": "a",
            "ClientRequestToken": TOKEN,
            "RotationRules": {"ScheduleExpression": "rate(4 hours)"},
        },
        sm.RotateSecretRequest(
            secret_id="a",
            client_request_token=TOKEN,
            rotation_rules=sm.RotationRules(schedule_expression="rate(4 hours)"),
        ),
    ),
    ("secretsmanager.CancelRotateSecret", {"SecretId": "a"}, sm.CancelRotateSecretRequest(secret_id="a")),
    (
        "secretsmanager.ReplicateSecretToRegions",
        {"SecretId": "a", "AddReplicaRegions": [{"Region": "local-2"}], "ForceOverwriteReplicaSecret": True},
        sm.ReplicateSecretToRegionsRequest(
            secret_id="a",
            add_replica_regions=[sm.ReplicaRegion(region="local-2")],
            force_overwrite_replica_secret=True,
        ),
    ),
    (
        "secretsmanager.RemoveRegionsFromReplication",
        {"SecretId": "a", "RemoveReplicaRegions": ["local-2"]},
        sm.RemoveRegionsFromReplicationRequest(secret_id="a", remove_replica_regions=["local-2"]),
    ),
    (
        "secretsmanager.StopReplicationToReplica",
        {"SecretId": "a"},
        sm.StopReplicationToReplicaRequest(secret_id="a"),
    ),
    (
        "secretsmanager.PutResourcePolicy",
        {"SecretId": "a", "ResourcePolicy": '{"Version":"2012-10-17"}', "BlockPublicPolicy": True},
        sm.PutResourcePolicyRequest(
            secret_id="a", resource_policy='{"Version":"2012-10-17"}', block_public_policy=True
        ),
    ),
    ("secretsmanager.GetResourcePolicy", {"SecretId": "a"}, sm.GetResourcePolicyRequest(secret_id="a")),
    ("secretsmanager.DeleteResourcePolicy", {"SecretId": "a"}, sm.DeleteResourcePolicyRequest(secret_id="a")),
    (
        "secretsmanager.ValidateResourcePolicy",
        {"ResourcePolicy": "{}"},
        sm.ValidateResourcePolicyRequest(resource_policy="{}"),
    ),
    (
        "TrentService.Encrypt",
        {
            "KeyId": "alias/app",
            "Plaintext": b"\xffdata",
            "EncryptionContext": {"purpose": "test", "k": ""},
            "GrantTokens": ["ignored"],
        },
        kms_pb2.EncryptRequest(
            key_id="alias/app", plaintext=b"\xffdata", encryption_context={"purpose": "test", "k": ""}
        ),
    ),
    (
        "TrentService.CreateKey",
        {"Description": "d", "Tags": [{"TagKey": "a", "TagValue": "b"}], "MultiRegion": True},
        kms_pb2.CreateKeyRequest(
            description="d", tags=[kms_pb2.Tag(tag_key="a", tag_value="b")], multi_region=True
        ),
    ),
    (
        "TrentService.GenerateDataKey",
        {"KeyId": "k", "NumberOfBytes": 64},
        kms_pb2.GenerateDataKeyRequest(key_id="k", number_of_bytes=64),
    ),
]


@pytest.mark.parametrize(("target", "params", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_botocore_requests_become_the_expected_message(
    target: str, params: dict[str, Any], expected: Message
) -> None:
    request_class, _ = _method_messages(target)
    message = request_from_json(request_class, _botocore_body(target, params))
    assert message == expected
    # presence, not only values: an explicit False/"" is set, an absent member is not
    for field in request_class.DESCRIPTOR.fields:
        if field.has_presence:
            assert message.HasField(field.name) == expected.HasField(field.name), field.name


def test_every_secrets_manager_operation_has_a_round_trip_case() -> None:
    covered = {target for target, _, _ in REQUESTS}
    assert {t for t in TARGETS if t.startswith("secretsmanager.")} <= covered


ARN = "arn:aws:secretsmanager:local-1:111122223333:secret:prod/db-AbCdEf"


def test_get_secret_value_response_parses_in_botocore() -> None:
    response = sm.GetSecretValueResponse(
        arn=ARN,
        name="prod/db",
        version_id=TOKEN,
        secret_binary=b"\x00\xff\x10bin",
        version_stages=["AWSCURRENT"],
        created_date=_ts(1523477145, 729_000_000),
    )
    body = response_to_json(response)
    assert body["CreatedDate"] == 1523477145.729
    assert body["SecretBinary"] == base64.b64encode(b"\x00\xff\x10bin").decode()
    assert "SecretString" not in body
    assert _botocore_parse("secretsmanager.GetSecretValue", body) == {
        "ARN": ARN,
        "Name": "prod/db",
        "VersionId": TOKEN,
        "SecretBinary": b"\x00\xff\x10bin",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": _utc(1523477145.729),
    }


def test_describe_secret_omits_what_is_unset_and_keeps_maps_tags_and_nested_lists() -> None:
    never_tagged = sm.DescribeSecretResponse(arn=ARN, name="prod/db", created_date=_ts(1700000000))
    assert response_to_json(never_tagged) == {"ARN": ARN, "Name": "prod/db", "CreatedDate": 1700000000}

    full = sm.DescribeSecretResponse(
        arn=ARN,
        name="prod/db",
        description="",
        kms_key_id="alias/app",
        rotation_enabled=False,
        rotation_lambda_arn="random-value",
        rotation_rules=sm.RotationRules(automatically_after_days=30),
        last_changed_date=_ts(1700000001, 500_000_000),
        deleted_date=_ts(1700000002),
        tags=sm.TagSet(),
        version_ids_to_stages={
            TOKEN: sm.VersionStages(stages=["AWSCURRENT", "blue"]),
            "x" * 32: sm.VersionStages(stages=[]),
        },
        primary_region="local-1",
        replication_status=[
            sm.ReplicationStatus(region="local-2", status="InSync", last_accessed_date=_ts(1700000003)),
            sm.ReplicationStatus(region="local-3", kms_key_id="k", status="Failed", status_message="no key"),
        ],
    )
    body = response_to_json(full)
    assert body["Tags"] == []  # tagged once, every tag removed since: present and empty, as AWS
    assert body["RotationEnabled"] is False
    assert body["Description"] == ""
    assert body["VersionIdsToStages"][TOKEN] == ["AWSCURRENT", "blue"]
    assert "LastRotatedDate" not in body and "OwningService" not in body
    parsed = _botocore_parse("secretsmanager.DescribeSecret", body)
    assert parsed == {
        "ARN": ARN,
        "Name": "prod/db",
        "Description": "",
        "KmsKeyId": "alias/app",
        "RotationEnabled": False,
        "RotationLambdaARN": "random-value",
        "RotationRules": {"AutomaticallyAfterDays": 30},
        "LastChangedDate": _utc(1700000001.5),
        "DeletedDate": _utc(1700000002),
        "Tags": [],
        "VersionIdsToStages": {TOKEN: ["AWSCURRENT", "blue"], "x" * 32: []},
        "PrimaryRegion": "local-1",
        "ReplicationStatus": [
            {"Region": "local-2", "Status": "InSync", "LastAccessedDate": _utc(1700000003)},
            {"Region": "local-3", "KmsKeyId": "k", "Status": "Failed", "StatusMessage": "no key"},
        ],
    }


def test_list_and_batch_responses_parse_in_botocore() -> None:
    listed = sm.ListSecretsResponse(
        secret_list=[
            sm.SecretListEntry(
                arn=ARN,
                name="prod/db",
                tags=sm.TagSet(tags=[sm.Tag(key="team", value="core")]),
                secret_versions_to_stages={TOKEN: sm.VersionStages(stages=["AWSCURRENT"])},
                last_accessed_date=_ts(1700000000),
            )
        ],
        next_token="next",
    )
    assert _botocore_parse("secretsmanager.ListSecrets", response_to_json(listed)) == {
        "SecretList": [
            {
                "ARN": ARN,
                "Name": "prod/db",
                "Tags": [{"Key": "team", "Value": "core"}],
                "SecretVersionsToStages": {TOKEN: ["AWSCURRENT"]},
                "LastAccessedDate": _utc(1700000000),
            }
        ],
        "NextToken": "next",
    }
    assert response_to_json(sm.ListSecretsResponse()) == {"SecretList": []}

    batch = sm.BatchGetSecretValueResponse(
        secret_values=[sm.SecretValueEntry(arn=ARN, name="prod/db", version_id=TOKEN, secret_string="s")],
        errors=[sm.APIErrorType(secret_id="gone", error_code="ResourceNotFoundException", message="m")],
    )
    assert _botocore_parse("secretsmanager.BatchGetSecretValue", response_to_json(batch)) == {
        "SecretValues": [
            {"ARN": ARN, "Name": "prod/db", "VersionId": TOKEN, "SecretString": "s", "VersionStages": []}
        ],
        "Errors": [{"SecretId": "gone", "ErrorCode": "ResourceNotFoundException", "Message": "m"}],
    }

    versions = sm.ListSecretVersionIdsResponse(
        arn=ARN,
        name="prod/db",
        versions=[
            sm.SecretVersionsListEntry(version_id=TOKEN, version_stages=[], created_date=_ts(1, 1_000_000))
        ],
    )
    assert _botocore_parse("secretsmanager.ListSecretVersionIds", response_to_json(versions)) == {
        "ARN": ARN,
        "Name": "prod/db",
        "Versions": [{"VersionId": TOKEN, "VersionStages": [], "CreatedDate": _utc(1.001), "KmsKeyIds": []}],
    }


def test_create_secret_without_replicas_has_no_replication_status() -> None:
    body = response_to_json(sm.CreateSecretResponse(arn=ARN, name="prod/db", version_id=TOKEN))
    assert body == {"ARN": ARN, "Name": "prod/db", "VersionId": TOKEN}
    assert response_to_json(sm.TagResourceResponse()) == {}


def test_kms_responses_parse_in_botocore() -> None:
    key_arn = "arn:aws:kms:local-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    created = kms_pb2.CreateKeyResponse(
        key_metadata=kms_pb2.KeyMetadata(
            aws_account_id="111122223333",
            key_id="1234abcd-12ab-34cd-56ef-1234567890ab",
            arn=key_arn,
            creation_date=_ts(1700000000, 250_000_000),
            enabled=False,
            description="",
            key_state="Disabled",
            encryption_algorithms=["SYMMETRIC_DEFAULT"],
            multi_region=False,
        )
    )
    parsed = _botocore_parse("TrentService.CreateKey", response_to_json(created))["KeyMetadata"]
    assert parsed["AWSAccountId"] == "111122223333"
    assert parsed["Arn"] == key_arn
    assert parsed["Enabled"] is False
    assert parsed["Description"] == ""
    assert parsed["MultiRegion"] is False
    assert parsed["CreationDate"] == _utc(1700000000.25)
    assert "DeletionDate" not in parsed and "MultiRegionConfiguration" not in parsed

    decrypted = kms_pb2.DecryptResponse(
        key_id=key_arn, plaintext=b"\x00" * 32, encryption_algorithm="SYMMETRIC_DEFAULT"
    )
    assert _botocore_parse("TrentService.Decrypt", response_to_json(decrypted))["Plaintext"] == b"\x00" * 32
    listed = kms_pb2.ListKeysResponse(keys=[kms_pb2.KeyListEntry(key_id="k", key_arn=key_arn)])
    assert _botocore_parse("TrentService.ListKeys", response_to_json(listed)) == {
        "Keys": [{"KeyId": "k", "KeyArn": key_arn}],
        "Truncated": False,
    }


# ---------------------------------------------------------------------------------------- refusals


def _refused(request_class: type[Message], body: Any) -> errors.CofferError:
    with pytest.raises(errors.Validation) as caught:
        request_from_json(request_class, body)
    return caught.value


@pytest.mark.parametrize(
    ("request_class", "body", "member"),
    [
        (sm.ListSecretsRequest, {"MaxResults": "10"}, "MaxResults"),
        (sm.ListSecretsRequest, {"MaxResults": 10.5}, "MaxResults"),
        (sm.ListSecretsRequest, {"MaxResults": 1.0}, "MaxResults"),
        (sm.ListSecretsRequest, {"MaxResults": True}, "MaxResults"),
        (sm.ListSecretsRequest, {"MaxResults": 2**31}, "MaxResults"),
        (sm.ListSecretsRequest, {"IncludePlannedDeletion": "true"}, "IncludePlannedDeletion"),
        (sm.ListSecretsRequest, {"IncludePlannedDeletion": 1}, "IncludePlannedDeletion"),
        (sm.ListSecretsRequest, {"Filters": {"Key": "name"}}, "Filters"),
        (sm.ListSecretsRequest, {"Filters": [{"Key": "name", "Values": "x"}]}, "Filters[0].Values"),
        (sm.ListSecretsRequest, {"Filters": [{"Key": "name"}, {"Values": [1]}]}, "Filters[1].Values[0]"),
        (sm.GetSecretValueRequest, {"SecretId": {"Name": "x"}}, "SecretId"),
        (sm.GetSecretValueRequest, {"SecretId": ["x"]}, "SecretId"),
        (sm.GetSecretValueRequest, {"SecretId": 5}, "SecretId"),
        (sm.PutSecretValueRequest, {"SecretId": "a", "SecretBinary": "AAE"}, "SecretBinary"),
        (sm.PutSecretValueRequest, {"SecretId": "a", "SecretBinary": "AA-_"}, "SecretBinary"),
        (sm.PutSecretValueRequest, {"SecretId": "a", "SecretBinary": "not base64!"}, "SecretBinary"),
        (sm.RotateSecretRequest, {"RotationRules": []}, "RotationRules"),
        (
            sm.RotateSecretRequest,
            {"RotationRules": {"AutomaticallyAfterDays": "7"}},
            "RotationRules.AutomaticallyAfterDays",
        ),
        (kms_pb2.EncryptRequest, {"EncryptionContext": {"a": 1}}, "EncryptionContext.a"),
        (kms_pb2.EncryptRequest, {"EncryptionContext": ["a"]}, "EncryptionContext"),
    ],
)
def test_wrong_json_types_are_serialization_exceptions_naming_the_member(
    request_class: type[Message], body: Any, member: str
) -> None:
    error = _refused(request_class, body)
    assert error.code == "SerializationException"
    assert f"'{member}'" in error.message


@pytest.mark.parametrize("body", [[], "x", 1, None, True])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    error = _refused(sm.GetSecretValueRequest, body)
    assert error.code == "SerializationException"
    assert "JSON object" in error.message


def test_null_is_absent_and_unknown_members_are_ignored() -> None:
    message = request_from_json(
        sm.GetSecretValueRequest,
        {"SecretId": "a", "VersionId": None, "VersionStage": None, "Unknown": {"x": [1]}, "secretid": 5},
    )
    assert message == sm.GetSecretValueRequest(secret_id="a")
    assert not message.HasField("version_id")
    assert request_from_json(sm.GetSecretValueRequest, {}) == sm.GetSecretValueRequest()


def test_empty_base64_and_explicit_empty_string_keep_presence() -> None:
    message = request_from_json(
        sm.PutSecretValueRequest, {"SecretId": "a", "SecretBinary": "", "SecretString": ""}
    )
    assert isinstance(message, sm.PutSecretValueRequest)
    assert message.HasField("secret_binary") and message.secret_binary == b""
    assert message.HasField("secret_string") and message.secret_string == ""


def test_timestamps_accept_numbers_with_fractions() -> None:
    # No public request has a timestamp today; the decoder is generic, so check it on a response type.
    message = request_from_json(sm.GetSecretValueResponse, {"CreatedDate": 1523477145.729})
    assert isinstance(message, sm.GetSecretValueResponse)
    assert (message.created_date.seconds, message.created_date.nanos) == (1523477145, 729_000_000)
    whole = request_from_json(sm.GetSecretValueResponse, {"CreatedDate": 7})
    assert isinstance(whole, sm.GetSecretValueResponse) and whole.created_date == _ts(7)
    error = _refused(sm.GetSecretValueResponse, {"CreatedDate": "2024-01-01T00:00:00Z"})
    assert error.code == "SerializationException" and "'CreatedDate'" in error.message


def test_responses_read_back_to_the_same_message() -> None:
    """response_to_json and request_from_json are inverse on what Coffer sends (maps of wrappers, tag sets,
    timestamps, blobs, nested lists)."""
    responses: list[Message] = [
        sm.DescribeSecretResponse(
            arn=ARN,
            tags=sm.TagSet(tags=[sm.Tag(key="a", value="")]),
            version_ids_to_stages={TOKEN: sm.VersionStages(stages=["AWSCURRENT"])},
            next_rotation_date=_ts(1700000000, 123_000_000),
            replication_status=[sm.ReplicationStatus(region="local-2", status="InSync")],
        ),
        sm.GetSecretValueResponse(arn=ARN, secret_binary=b"\x00", created_date=_ts(5, 500_000_000)),
        kms_pb2.GenerateDataKeyResponse(ciphertext_blob=b"\x01\x02", plaintext=b"p" * 32, key_id="k"),
    ]
    for response in responses:
        assert request_from_json(type(response), response_to_json(response)) == response
