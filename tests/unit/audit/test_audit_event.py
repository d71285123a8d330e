"""Audit events: CloudTrail shape, redaction of secret values and keys, canonical JSON bytes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from coffer.api.secrets.v1 import secrets_pb2
from coffer.core.audit_event import (
    AuditEvent,
    AuditResource,
    UserIdentity,
    canonical_json,
    format_event_time,
    is_secret_field,
    new_event,
    redact,
)

IDENTITY = UserIdentity(
    type="IAMUser",
    arn="arn:aws:iam::000000000000:user/alice",
    account_id="000000000000",
    access_key_id="AKIAEXAMPLE000000001",
    principal_id="AIDAEXAMPLE000000001",
)


def _event(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "event_time": datetime(2026, 3, 4, 9, 15, 2, 987000, tzinfo=UTC),
        "event_source": "secretsmanager.amazonaws.com",
        "event_name": "PutSecretValue",
        "aws_region": "local-1",
        "source_ip_address": "198.51.100.24",
        "user_agent": "coffer-cli/0.1",
        "user_identity": IDENTITY,
        "request_parameters": {
            "secretId": "prod/orders/db",
            "clientRequestToken": "0b8e2f4a-6c1d-4e7b-9a3f-2d5c8e1b7a90",
            "secretString": "hunter2",
        },
        "response_elements": {
            "arn": "arn:aws:secretsmanager:local-1:000000000000:secret:prod/orders/db-Ab12Cd"
        },
        "request_id": "1d6f3a52-5a7e-4c1e-9f55-0b9a3e2c7d10",
        "event_id": "8f2b6c1e-93d4-4e0a-a1b7-5c3d2e9f0a64",
        "read_only": False,
        "resources": [
            AuditResource(
                arn="arn:aws:secretsmanager:local-1:000000000000:secret:prod/orders/db-Ab12Cd",
                account_id="000000000000",
                type="AWS::SecretsManager::Secret",
            )
        ],
    }
    fields.update(overrides)
    return new_event(**fields)


# --- CloudTrail shape


def test_record_has_cloudtrail_fields_and_names() -> None:
    record = _event().to_record()
    assert record["eventTime"] == "2026-03-04T09:15:02Z"
    assert record["eventSource"] == "secretsmanager.amazonaws.com"
    assert record["eventName"] == "PutSecretValue"
    assert record["awsRegion"] == "local-1"
    assert record["sourceIPAddress"] == "198.51.100.24"
    assert record["userAgent"] == "coffer-cli/0.1"
    assert record["userIdentity"] == {
        "type": "IAMUser",
        "arn": "arn:aws:iam::000000000000:user/alice",
        "accountId": "000000000000",
        "accessKeyId": "AKIAEXAMPLE000000001",
        "principalId": "AIDAEXAMPLE000000001",
    }
    assert record["requestParameters"] == {
        "secretId": "prod/orders/db",
        "clientRequestToken": "0b8e2f4a-6c1d-4e7b-9a3f-2d5c8e1b7a90",
    }
    assert record["responseElements"] == {
        "arn": "arn:aws:secretsmanager:local-1:000000000000:secret:prod/orders/db-Ab12Cd"
    }
    assert record["requestID"] == "1d6f3a52-5a7e-4c1e-9f55-0b9a3e2c7d10"
    assert record["eventID"] == "8f2b6c1e-93d4-4e0a-a1b7-5c3d2e9f0a64"
    assert record["readOnly"] is False
    assert record["resources"] == [
        {
            "ARN": "arn:aws:secretsmanager:local-1:000000000000:secret:prod/orders/db-Ab12Cd",
            "accountId": "000000000000",
            "type": "AWS::SecretsManager::Secret",
        }
    ]
    assert record["eventVersion"] == "1.09"
    assert record["eventType"] == "AwsApiCall"
    assert "errorCode" not in record and "errorMessage" not in record


def test_failed_call_carries_error_and_null_response() -> None:
    record = _event(
        event_name="GetSecretValue",
        read_only=True,
        request_parameters={"secretId": "db/y"},
        response_elements=None,
        error_code="AccessDenied",
        error_message="User: arn:aws:iam::000000000000:user/alice is not authorized to perform: "
        "secretsmanager:GetSecretValue on resource: db/y",
        resources=[],
    ).to_record()
    assert record["errorCode"] == "AccessDenied"
    assert record["errorMessage"].startswith("User: arn:aws:iam::000000000000:user/alice")
    assert record["responseElements"] is None
    assert "resources" not in record


def test_short_fields_cut_to_one_kilobyte() -> None:
    record = _event(user_agent="u" * 5000, error_code="E" * 2000, error_message="m" * 3000).to_record()
    assert len(record["userAgent"]) == 1024
    assert len(record["errorCode"]) == 1024
    assert len(record["errorMessage"]) == 1024


def test_event_id_defaults_to_a_fresh_uuid() -> None:
    a = _event(event_id=None)
    b = _event(event_id=None)
    assert a.event_id != b.event_id
    assert uuid.UUID(a.event_id).version == 4


def test_event_time_is_utc_whole_seconds() -> None:
    paris = timezone(timedelta(hours=1))
    assert format_event_time(datetime(2026, 1, 2, 10, 0, 5, 999999, tzinfo=paris)) == "2026-01-02T09:00:05Z"
    assert format_event_time(datetime(2026, 1, 2, 10, 0, 5)) == "2026-01-02T10:00:05Z"


def test_event_is_frozen_and_its_parameters_read_only() -> None:
    event = _event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.event_name = "DeleteSecret"  # type: ignore[misc]
    assert event.request_parameters is not None
    with pytest.raises(TypeError):
        event.request_parameters["secretString"] = "x"  # type: ignore[index]
    nested = _event(request_parameters={"tags": [{"key": "team", "value": "a"}]})
    assert nested.request_parameters is not None
    with pytest.raises(TypeError):
        nested.request_parameters["tags"][0]["value"] = "b"


def test_record_round_trip_keeps_bytes() -> None:
    event = _event()
    again = AuditEvent.from_record(json.loads(event.canonical()))
    assert again == event
    assert again.canonical() == event.canonical()


def test_from_record_redacts_again() -> None:
    record = _event().to_record()
    record["requestParameters"]["SecretString"] = "smuggled"
    assert b"smuggled" not in AuditEvent.from_record(record).canonical()


# --- Redaction


@pytest.mark.parametrize(
    "name",
    [
        "SecretString",
        "secretString",
        "secret_string",
        "SecretBinary",
        "secretBinary",
        "RandomPassword",
        "randomPassword",
        "Plaintext",
        "plaintext",
        "SecretAccessKey",
        "secretAccessKey",
        "SessionToken",
        "sessionToken",
        "RotationToken",
        "rotation-token",
        "Password",
        "masterUserPassword",
        "PrivateKey",
        "KeyMaterial",
        "DataKey",
        "PlaintextDataKey",
    ],
)
def test_secret_field_names(name: str) -> None:
    assert is_secret_field(name)


@pytest.mark.parametrize(
    "name",
    [
        "SecretId",
        "secretId",
        "ClientRequestToken",
        "NextToken",
        "VersionId",
        "KmsKeyId",
        "ARN",
        "AccessKeyId",
        "PasswordLength",
        "passwordLength",
        "Name",
        "TagKeys",
        "CiphertextBlob",
    ],
)
def test_identifying_field_names_kept(name: str) -> None:
    assert not is_secret_field(name)


def test_redact_removes_secret_keys_at_any_depth() -> None:
    value = {
        "secretId": "a",
        "SecretString": "s1",
        "credentials": {"AccessKeyId": "AKIA1", "SecretAccessKey": "k1", "SessionToken": "t1"},
        "secretValues": [
            {"arn": "arn:1", "secretString": "s2", "secretBinary": "YmluYXJ5"},
            {"arn": "arn:2", "nested": [{"plaintext": "p"}]},
        ],
    }
    out = redact(value)
    assert out == {
        "secretId": "a",
        "credentials": {"AccessKeyId": "AKIA1"},
        "secretValues": [{"arn": "arn:1"}, {"arn": "arn:2", "nested": [{}]}],
    }
    assert value["SecretString"] == "s1"  # the input is left alone


def test_new_event_redacts_response_elements_too() -> None:
    event = _event(
        event_name="GetRandomPassword",
        request_parameters={"passwordLength": 32},
        response_elements={"randomPassword": "pw-value"},
    )
    assert event.to_record()["requestParameters"] == {"passwordLength": 32}
    assert event.to_record()["responseElements"] == {}
    assert b"pw-value" not in event.canonical()


# Fields of coffer.api.secrets.v1 that carry a secret value or a token that authorises one. Every other field
# holds names, ids, options or metadata.
_VALUE_BEARING = {"secret_string", "secret_binary", "random_password", "rotation_token"}


def _fill(message: Message, depth: int = 0) -> None:
    """Set every field of a message (and its sub-messages, a few levels deep) to a value naming the field."""
    descriptor: Any = message.DESCRIPTOR
    for f in descriptor.fields:
        marker = f"MARK-{descriptor.name}-{f.name}"
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_field, value_field = f.message_type.fields
            target = getattr(message, f.name)
            key = marker if key_field.type == FieldDescriptor.TYPE_STRING else 1
            if value_field.message_type is not None:
                if depth < 3:
                    _fill(target[key], depth + 1)
            elif value_field.type == FieldDescriptor.TYPE_STRING:
                target[key] = marker + "-value"
            continue
        repeated = f.is_repeated
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            assert f.message_type is not None
            if f.message_type.full_name.startswith("google.protobuf."):
                continue
            if depth >= 3:
                continue
            sub = getattr(message, f.name).add() if repeated else getattr(message, f.name)
            _fill(sub, depth + 1)
            if not repeated:
                sub.SetInParent()
            continue
        value: Any
        if f.type == FieldDescriptor.TYPE_STRING:
            value = marker
        elif f.type == FieldDescriptor.TYPE_BYTES:
            value = marker.encode()
        elif f.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif f.type == FieldDescriptor.TYPE_ENUM:
            assert f.enum_type is not None
            value = f.enum_type.values[-1].number
        elif f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            continue
        else:
            value = 7
        if repeated:
            getattr(message, f.name).append(value)
        else:
            setattr(message, f.name, value)


def _markers(message_descriptor: Descriptor, names: set[str], depth: int = 0) -> set[str]:
    """Every marker ``_fill`` writes for a field whose name is in ``names`` (plain and base64 forms)."""
    found: set[str] = set()
    for f in message_descriptor.fields:
        if f.message_type is not None and not f.message_type.full_name.startswith("google.protobuf."):
            if depth < 3 and not f.message_type.GetOptions().map_entry:
                found |= _markers(f.message_type, names, depth + 1)
            continue
        if f.name in names:
            marker = f"MARK-{message_descriptor.name}-{f.name}"
            found.add(marker)
            found.add(base64.b64encode(marker.encode()).decode())
    return found


_API_MESSAGES = sorted(
    name for name in secrets_pb2.DESCRIPTOR.message_types_by_name if name.endswith(("Request", "Response"))
)


@pytest.mark.parametrize("proto_names", [False, True], ids=["camelCase", "snake_case"])
@pytest.mark.parametrize("message_name", _API_MESSAGES)
def test_no_value_bearing_proto_field_survives(message_name: str, proto_names: bool) -> None:
    descriptor = secrets_pb2.DESCRIPTOR.message_types_by_name[message_name]
    message = GetMessageClass(descriptor)()
    _fill(message)
    as_dict = json_format.MessageToDict(message, preserving_proto_field_name=proto_names)
    if message_name.endswith("Request"):
        event = _event(request_parameters=as_dict, response_elements=None)
    else:
        event = _event(request_parameters=None, response_elements=as_dict)
    text = event.canonical().decode()
    for marker in _markers(descriptor, _VALUE_BEARING):
        assert marker not in text, f"{message_name}: {marker} survived redaction"
    # Identifying fields do survive (redaction does not wipe everything).
    for marker in _markers(descriptor, {"secret_id", "arn", "name"}):
        if not marker.startswith("MARK-"):
            continue  # the base64 form, for bytes fields
        assert marker in text, f"{message_name}: {marker} was dropped"


def test_the_proto_walk_meets_every_value_bearing_field() -> None:
    seen = {
        (name, f.name)
        for name in _API_MESSAGES
        for f in secrets_pb2.DESCRIPTOR.message_types_by_name[name].fields
        if f.name in _VALUE_BEARING
    }
    names = {n for n, _ in seen}
    assert {
        "CreateSecretRequest",
        "PutSecretValueRequest",
        "UpdateSecretRequest",
        "GetSecretValueResponse",
        "GetRandomPasswordResponse",
    } <= names
    batch = secrets_pb2.DESCRIPTOR.message_types_by_name["BatchGetSecretValueResponse"]
    assert _markers(batch, _VALUE_BEARING)  # reached through the repeated SecretValueEntry


# --- Canonical encoding


def test_canonical_json_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}, "é": "ü"}) == (
        '{"a":{"c":null,"d":[1,2]},"b":1,"é":"ü"}'.encode()
    )


def test_canonical_json_independent_of_insertion_order() -> None:
    one = {"x": 1, "y": {"p": True, "q": "z"}}
    two = {"y": {"q": "z", "p": True}, "x": 1}
    assert canonical_json(one) == canonical_json(two)


@pytest.mark.parametrize("bad", [1.5, float("nan"), float("inf"), b"bytes", {1: "int key"}, object()])
def test_canonical_json_refuses_non_canonical_values(bad: Any) -> None:
    with pytest.raises(ValueError):
        canonical_json({"v": bad})


def test_new_event_refuses_floats_in_parameters() -> None:
    with pytest.raises(ValueError, match="no floats"):
        _event(request_parameters={"ratio": 0.5})


def test_canonical_bytes_are_stable() -> None:
    """A fixed event always encodes to the same bytes (a change here breaks every stored chain)."""
    expected = (
        b'{"awsRegion":"local-1","eventID":"8f2b6c1e-93d4-4e0a-a1b7-5c3d2e9f0a64","eventName":"PutSecretValue",'
        b'"eventSource":"secretsmanager.amazonaws.com","eventTime":"2026-03-04T09:15:02Z","eventType":"AwsApiCall",'
        b'"eventVersion":"1.09","readOnly":false,"recipientAccountId":"000000000000",'
        b'"requestID":"1d6f3a52-5a7e-4c1e-9f55-0b9a3e2c7d10","requestParameters":{"clientRequestToken":'
        b'"0b8e2f4a-6c1d-4e7b-9a3f-2d5c8e1b7a90","secretId":"prod/orders/db"},"resources":[{"ARN":'
        b'"arn:aws:secretsmanager:local-1:000000000000:secret:prod/orders/db-Ab12Cd","accountId":"000000000000",'
        b'"type":"AWS::SecretsManager::Secret"}],"responseElements":{"arn":'
        b'"arn:aws:secretsmanager:local-1:000000000000:secret:prod/orders/db-Ab12Cd"},"sourceIPAddress":'
        b'"198.51.100.24","userAgent":"coffer-cli/0.1","userIdentity":{"accessKeyId":"AKIAEXAMPLE000000001",'
        b'"accountId":"000000000000","arn":"arn:aws:iam::000000000000:user/alice","principalId":'
        b'"AIDAEXAMPLE000000001","type":"IAMUser"}}'
    )
    assert _event().canonical() == expected
    assert _event().canonical() == _event().canonical()
    assert hashlib.sha256(_event().canonical()).digest() == hashlib.sha256(expected).digest()


def test_unseal_shares_are_left_out() -> None:
    from coffer.core.audit_event import redact

    assert redact({"share": "word word", "shares": ["a b"], "keyShares": 5}) == {"keyShares": 5}
