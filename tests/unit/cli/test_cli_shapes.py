"""CLI arguments → request messages, and responses → the AWS CLI's JSON (names, omitted fields, base64
blobs, timestamps), all driven by the proto descriptors."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.kms.v1 import kms_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.cli import shapes
from coffer.cli.main import EXIT_CONFIG, EXIT_SERVICE_ERROR, EXIT_USAGE, build_parser, main
from coffer.client import _ops
from coffer.core import errors


@pytest.fixture(autouse=True)
def _utc_host(in_zone: Callable[[str], None]) -> None:
    """Timestamps print in the local zone (as the AWS CLI's): the expected texts below are for a UTC host."""
    in_zone("UTC")


def request(*argv: str) -> Message:
    args = build_parser().parse_args(list(argv))
    service = _ops.SECRETS if argv[0] == "secretsmanager" else _ops.KMS
    for method in service.methods:
        if shapes.command_name(method.name) == argv[1]:
            return shapes.request_from_args(method.input_type, args)
    raise AssertionError(argv[1])


def test_every_operation_of_both_services_is_a_command() -> None:
    parser = build_parser()
    for service, name in ((_ops.SECRETS, "secretsmanager"), (_ops.KMS, "kms")):
        for method in service.methods:
            with pytest.raises(SystemExit) as info:
                parser.parse_args([name, shapes.command_name(method.name), "--help"])
            assert info.value.code == 0
    assert shapes.command_name("ListSecretVersionIds") == "list-secret-version-ids"
    assert shapes.command_name("RotateKeyOnDemand") == "rotate-key-on-demand"


def test_create_secret_with_tags_in_shorthand_and_json() -> None:
    got = request(
        "secretsmanager",
        "create-secret",
        "--name",
        "db/prod",
        "--secret-string",
        '{"u": "x"}',
        "--tags",
        "Key=team,Value=pay",
        "Key=env,Value=prod",
        "--description",
        "",
    )
    assert got == sm.CreateSecretRequest(
        name="db/prod",
        secret_string='{"u": "x"}',
        description="",
        tags=[sm.Tag(key="team", value="pay"), sm.Tag(key="env", value="prod")],
    )
    assert got.HasField("description") and not got.HasField("secret_binary")
    as_json = request(
        "secretsmanager", "tag-resource", "--secret-id", "s", "--tags", '[{"Key": "a", "Value": "b,c"}]'
    )
    assert as_json == sm.TagResourceRequest(secret_id="s", tags=[sm.Tag(key="a", value="b,c")])


def test_secret_binary_from_fileb_and_from_base64(tmp_path: Path) -> None:
    blob = bytes(range(256))
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    got = request(
        "secretsmanager", "put-secret-value", "--secret-id", "s", "--secret-binary", f"fileb://{path}"
    )
    assert isinstance(got, sm.PutSecretValueRequest) and got.secret_binary == blob
    b64 = base64.b64encode(b"\x00\x01hi").decode()
    got = request("secretsmanager", "put-secret-value", "--secret-id", "s", "--secret-binary", b64)
    assert isinstance(got, sm.PutSecretValueRequest) and got.secret_binary == b"\x00\x01hi"
    with pytest.raises(shapes.UsageError, match="base64"):
        request("secretsmanager", "put-secret-value", "--secret-id", "s", "--secret-binary", "not base64!")


def test_secret_string_from_file(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text('{"password": "p"}')
    got = request(
        "secretsmanager", "put-secret-value", "--secret-id", "s", "--secret-string", f"file://{path}"
    )
    assert isinstance(got, sm.PutSecretValueRequest) and got.secret_string == '{"password": "p"}'


def test_lists_filters_and_booleans() -> None:
    got = request(
        "secretsmanager",
        "list-secrets",
        "--filters",
        "Key=name,Values=db/,prod/",
        "Key=tag-key,Values=[team]",
        "--include-planned-deletion",
        "--max-results",
        "5",
        "--sort-order",
        "desc",
    )
    assert got == sm.ListSecretsRequest(
        filters=[sm.Filter(key="name", values=["db/", "prod/"]), sm.Filter(key="tag-key", values=["team"])],
        include_planned_deletion=True,
        max_results=5,
        sort_order="desc",
    )
    got = request("secretsmanager", "put-secret-value", "--secret-id", "s", "--version-stages", "A", "B")
    assert isinstance(got, sm.PutSecretValueRequest) and list(got.version_stages) == ["A", "B"]
    got = request("secretsmanager", "delete-secret", "--secret-id", "s", "--force-delete-without-recovery")
    assert isinstance(got, sm.DeleteSecretRequest)
    assert got.HasField("force_delete_without_recovery") and got.force_delete_without_recovery
    got = request("secretsmanager", "delete-secret", "--secret-id", "s", "--no-force-delete-without-recovery")
    assert isinstance(got, sm.DeleteSecretRequest)
    assert got.HasField("force_delete_without_recovery") and not got.force_delete_without_recovery
    got = request("secretsmanager", "delete-secret", "--secret-id", "s", "--recovery-window-in-days", "7")
    assert isinstance(got, sm.DeleteSecretRequest) and not got.HasField("force_delete_without_recovery")
    assert got.recovery_window_in_days == 7
    got = request("secretsmanager", "list-secret-version-ids", "--secret-id", "s", "--include-deprecated")
    assert isinstance(got, sm.ListSecretVersionIdsRequest) and got.include_deprecated
    got = request("secretsmanager", "untag-resource", "--secret-id", "s", "--tag-keys", '["a", "b"]')
    assert isinstance(got, sm.UntagResourceRequest) and list(got.tag_keys) == ["a", "b"]


def test_get_random_password_flags() -> None:
    got = request(
        "secretsmanager",
        "get-random-password",
        "--password-length",
        "20",
        "--exclude-characters",
        "/@\"'\\",
        "--no-require-each-included-type",
        "--include-space",
    )
    assert got == sm.GetRandomPasswordRequest(
        password_length=20, exclude_characters="/@\"'\\", require_each_included_type=False, include_space=True
    )
    assert not request("secretsmanager", "get-random-password").ListFields()


def test_kms_encryption_context_tags_and_blobs() -> None:
    got = request(
        "kms",
        "encrypt",
        "--key-id",
        "alias/app",
        "--plaintext",
        base64.b64encode(b"hello").decode(),
        "--encryption-context",
        "app=pay",
        "stage=prod,team=core",
    )
    assert got == kms_pb2.EncryptRequest(
        key_id="alias/app",
        plaintext=b"hello",
        encryption_context={"app": "pay", "stage": "prod", "team": "core"},
    )
    got = request("kms", "decrypt", "--ciphertext-blob", "AAEC", "--encryption-context", '{"a": "b"}')
    assert got == kms_pb2.DecryptRequest(ciphertext_blob=b"\x00\x01\x02", encryption_context={"a": "b"})
    got = request(
        "kms", "create-key", "--description", "d", "--tags", "TagKey=a,TagValue=b", "--multi-region"
    )
    assert got == kms_pb2.CreateKeyRequest(
        description="d", tags=[kms_pb2.Tag(tag_key="a", tag_value="b")], multi_region=True
    )
    got = request("kms", "schedule-key-deletion", "--key-id", "k", "--pending-window-in-days", "7")
    assert got == kms_pb2.ScheduleKeyDeletionRequest(key_id="k", pending_window_in_days=7)


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(
        ["--endpoint", "h:1", "--region", "r", "secretsmanager", "describe-secret", "--secret-id", "s"]
    )
    after = parser.parse_args(
        ["secretsmanager", "describe-secret", "--secret-id", "s", "--endpoint", "h:1", "--region", "r"]
    )
    for args in (before, after):
        assert (args.endpoint, args.ca_file, args.region) == ("h:1", None, "r")


def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_usage_errors_exit_252() -> None:
    code, _, err = run_main("secretsmanager", "get-secret-value")
    assert code == EXIT_USAGE and "--secret-id" in err
    code, _, err = run_main("secretsmanager", "no-such-op")
    assert code == EXIT_USAGE
    code, _, err = run_main("secretsmanager", "get-random-password", "--password-length", "many")
    assert code == EXIT_USAGE and "integer" in err


def test_missing_configuration_exits_253(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("COFFER_ENDPOINT", "COFFER_CA_FILE", "COFFER_ACCESS_KEY_ID", "COFFER_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("secretsmanager", "describe-secret", "--secret-id", "s")
    assert code == EXIT_CONFIG and "endpoint" in err


def test_service_errors_are_printed_like_the_aws_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not a real CA; the call is intercepted")
    seen: list[Any] = []

    def fake_call(self: Any, operation: str, request: Message | None = None, /, **fields: Any) -> Message:
        seen.append((operation, request))
        error = errors.NotFound("Secrets Manager can't find the specified secret.")
        error.operation = operation  # as the SDK's call marks the errors the service answered
        raise error

    monkeypatch.setattr("coffer.client.sync._SyncService.call", fake_call)
    code, out, err = run_main(
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        "nope",
        "--endpoint",
        "127.0.0.1:1",
        "--ca-file",
        str(ca),
    )
    assert code == EXIT_SERVICE_ERROR and out == ""
    assert err.strip() == (
        "An error occurred (ResourceNotFoundException) when calling the GetSecretValue operation: "
        "Secrets Manager can't find the specified secret."
    )
    assert seen == [("GetSecretValue", sm.GetSecretValueRequest(secret_id="nope"))]


# --- responses ----------------------------------------------------------------------------------------------


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def test_describe_secret_json_names_omissions_and_timestamps() -> None:
    resp = sm.DescribeSecretResponse(
        arn="arn:aws:secretsmanager:local-1:000000000000:secret:db/prod-AbCdEf",
        name="db/prod",
        description="",
        created_date=ts(1_700_000_000, 123_000_000),
        last_changed_date=ts(1_700_000_100),
        rotation_lambda_arn="arn:aws:lambda:local-1:000000000000:function:rot",
        version_ids_to_stages={
            "v2": sm.VersionStages(stages=["AWSCURRENT"]),
            "v1": sm.VersionStages(stages=["AWSPREVIOUS"]),
        },
    )
    body = shapes.to_aws(resp)
    assert body == {
        "ARN": "arn:aws:secretsmanager:local-1:000000000000:secret:db/prod-AbCdEf",
        "Name": "db/prod",
        "Description": "",
        "RotationLambdaARN": "arn:aws:lambda:local-1:000000000000:function:rot",
        "LastChangedDate": "2023-11-14T22:15:00+00:00",
        "VersionIdsToStages": {"v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"]},
        "CreatedDate": "2023-11-14T22:13:20.123000+00:00",
    }
    # Never tagged: no Tags. All tags removed: "Tags": [].
    assert "Tags" not in body
    resp.tags.SetInParent()
    assert shapes.to_aws(resp)["Tags"] == []
    resp.tags.tags.add(key="a", value="")
    assert shapes.to_aws(resp)["Tags"] == [{"Key": "a", "Value": ""}]
    assert json.loads(json.dumps(body))["CreatedDate"] == "2023-11-14T22:13:20.123000+00:00"


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Paris"])
def test_timestamps_print_exactly_as_the_aws_cli_prints_them(
    zone: str, in_zone: Callable[[str], None]
) -> None:
    """The AWS CLI with ISO 8601 output (v2's default; v1 with ``cli_timestamp_format = iso8601``; v1's own
    default prints the wire's epoch number) parses the epoch seconds AWS sends (milliseconds) with botocore
    into a local-time datetime and prints its ``isoformat()``. Compared with awscli's own parser over the
    numbers AWS's JSON protocol would carry (``epoch_seconds``), in zones with odd offsets and DST."""
    from awscli.customizations.scalarparse import iso_format  # type: ignore[import-untyped]

    in_zone(zone)
    for seconds, nanos in [
        (1_700_000_000, 123_000_000),
        (1_796_000_000, 0),
        (5, 0),
        (1_751_328_000, 999_999_999),
    ]:
        stamp = ts(seconds, nanos)
        wire = json.loads(json.dumps(shapes.epoch_seconds(stamp)))
        assert shapes.aws_timestamp(stamp) == iso_format(wire)
    in_zone("UTC")
    assert shapes.aws_timestamp(ts(1_796_000_000, 123_456_789)) == "2026-11-30T00:53:20.123000+00:00"


def test_get_secret_value_binary_is_base64_and_string_absent() -> None:
    resp = sm.GetSecretValueResponse(
        arn="a",
        name="n",
        version_id="v",
        secret_binary=b"\xff\x00",
        version_stages=["AWSCURRENT"],
        created_date=ts(5),
    )
    assert shapes.to_aws(resp) == {
        "ARN": "a",
        "Name": "n",
        "VersionId": "v",
        "SecretBinary": "/wA=",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": "1970-01-01T00:00:05+00:00",
    }


def test_list_outputs_keep_empty_result_lists_and_drop_empty_nested_lists() -> None:
    assert shapes.to_aws(sm.ListSecretsResponse()) == {"SecretList": []}
    listing = sm.ListSecretVersionIdsResponse(
        arn="a",
        name="n",
        versions=[
            sm.SecretVersionsListEntry(
                version_id="old", created_date=ts(1), kms_key_ids=["DefaultEncryptionKey"]
            ),
            sm.SecretVersionsListEntry(version_id="cur", version_stages=["AWSCURRENT"], created_date=ts(2)),
        ],
    )
    body = shapes.to_aws(listing)
    assert body["Versions"][0] == {
        "VersionId": "old",
        "CreatedDate": "1970-01-01T00:00:01+00:00",
        "KmsKeyIds": ["DefaultEncryptionKey"],
    }
    assert body["Versions"][1] == {
        "VersionId": "cur",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": "1970-01-01T00:00:02+00:00",
    }
    entry = sm.SecretListEntry(
        arn="a", name="n", secret_versions_to_stages={"v": sm.VersionStages(stages=["X"])}
    )
    assert shapes.to_aws(sm.ListSecretsResponse(secret_list=[entry]))["SecretList"] == [
        {"ARN": "a", "Name": "n", "SecretVersionsToStages": {"v": ["X"]}}
    ]
    assert shapes.to_aws(sm.CreateSecretResponse(arn="a", name="n")) == {"ARN": "a", "Name": "n"}
    assert shapes.to_aws(sm.TagResourceResponse()) == {}


def test_kms_key_metadata_and_ciphertext() -> None:
    meta = kms_pb2.KeyMetadata(
        aws_account_id="000000000000",
        key_id="k",
        arn="arn:aws:kms:local-1:000000000000:key/k",
        creation_date=ts(10),
        enabled=False,
        description="",
        key_usage="ENCRYPT_DECRYPT",
        key_state="Disabled",
        origin="AWS_KMS",
        key_manager="CUSTOMER",
        customer_master_key_spec="SYMMETRIC_DEFAULT",
        key_spec="SYMMETRIC_DEFAULT",
        encryption_algorithms=["SYMMETRIC_DEFAULT"],
        multi_region=False,
        current_key_material_id="ab" * 32,
    )
    body = shapes.to_aws(kms_pb2.DescribeKeyResponse(key_metadata=meta))["KeyMetadata"]
    assert body["AWSAccountId"] == "000000000000"
    assert body["Arn"] == "arn:aws:kms:local-1:000000000000:key/k"
    assert (
        body["Enabled"] is False
        and body["Description"] == ""
        and body["CreationDate"] == "1970-01-01T00:00:10+00:00"
    )
    assert "DeletionDate" not in body
    enc = shapes.to_aws(
        kms_pb2.EncryptResponse(
            ciphertext_blob=b"\x01\x02\x03", key_id="arn", encryption_algorithm="SYMMETRIC_DEFAULT"
        )
    )
    assert enc == {"CiphertextBlob": "AQID", "KeyId": "arn", "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
    keys = shapes.to_aws(kms_pb2.ListKeysResponse(keys=[kms_pb2.KeyListEntry(key_id="k", key_arn="a")]))
    assert keys == {"Keys": [{"KeyId": "k", "KeyArn": "a"}], "Truncated": False}
