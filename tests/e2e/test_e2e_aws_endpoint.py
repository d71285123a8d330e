"""The AWS-protocol endpoint of a deployment started like ``make run`` (all services as processes): the
profile names it, ``coffer aws-env`` prints the exports, and the real AWS CLI (``awscli`` from PyPI,
unmodified) works in a shell that evaluated them — as the deployment's admin, in its region. Issue 10's
"Shows" with other clients nobody on the team wrote: boto3 through a secret's whole lifecycle (errors with
AWS's codes and messages), AWS's ``aws-secretsmanager-caching`` seeing a new value after its refresh interval,
and the AWS CLI assuming a role (whose permissions, not the admin's, then apply) and round-tripping KMS blobs
(boto3's replication to ``local-2`` is in test_e2e_replication.py, which has the two-region deployment)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_secretsmanager_caching import SecretCache, SecretCacheConfig  # type: ignore[import-untyped]
from botocore.config import Config
from botocore.exceptions import ClientError

from coffer.client.credentials import Credentials
from coffer.testing.wait import eventually_sync

from .conftest import E2E, coffer_command

AWS_CLI = Path(sys.executable).parent / "aws"


def _shell(e2e: E2E, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash after ``eval "$(coffer aws-env)"``, with no AWS or Coffer settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COFFER_", "AWS_"))}
    env["COFFER_PROFILE"] = str(e2e.profile_path)
    env["HOME"] = str(e2e.home)  # no ~/.aws of the machine's
    coffer = " ".join(shlex.quote(part) for part in coffer_command())
    return subprocess.run(
        ["bash", "-c", f'set -e; eval "$({coffer} aws-env)"; {script}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_aws_cli_works_after_eval_aws_env(e2e: E2E) -> None:
    profile = json.loads(e2e.profile_path.read_text())
    assert profile["aws_endpoint_url"] == e2e.aws_endpoint_url

    aws = shlex.quote(str(AWS_CLI))

    def identity() -> subprocess.CompletedProcess[str]:
        # The admin's bootstrap key gets its secret sealed once the kms answers: moments after start.
        result = _shell(e2e, f"{aws} sts get-caller-identity")
        assert result.returncode == 0, result.stderr
        return result

    me = json.loads(eventually_sync(identity, timeout=30, interval=0.5).stdout)
    assert me["Arn"].endswith(":user/admin") and me["Account"] == e2e.settings.account_id

    created = _shell(
        e2e,
        f"{aws} secretsmanager create-secret --name e2e/aws-cli --secret-string from-the-aws-cli >/dev/null; "
        f"{aws} secretsmanager get-secret-value --secret-id e2e/aws-cli",
    )
    assert created.returncode == 0, created.stderr
    got = json.loads(created.stdout)
    assert got["SecretString"] == "from-the-aws-cli" and f":{e2e.settings.region}:" in got["ARN"]
    # ... and the same secret through Coffer's own CLI.
    assert (
        e2e.cli_json("secretsmanager", "get-secret-value", "--secret-id", "e2e/aws-cli")["SecretString"]
        == "from-the-aws-cli"
    )

    missing = _shell(e2e, f"{aws} secretsmanager describe-secret --secret-id e2e/none")
    assert missing.returncode != 0
    assert "An error occurred (ResourceNotFoundException) when calling the DescribeSecret operation" in (
        missing.stderr
    )


# --- issue 10's "Shows": boto3's whole lifecycle, AWS's caching library, and the AWS CLI's STS and KMS ---


def _boto(e2e: E2E, service: str, creds: Credentials | None = None) -> Any:
    """A boto3 client of ``service`` on the deployment's AWS endpoint, trusting its CA, signing as ``creds``
    (default: the admin); no retries, so every refusal reaches the test as the server sent it."""
    c = creds or e2e.admin_credentials
    return boto3.session.Session().client(
        service,
        endpoint_url=e2e.aws_endpoint_url,
        verify=str(e2e.ca_file),
        region_name=e2e.settings.region,
        aws_access_key_id=c.access_key_id,
        aws_secret_access_key=c.secret_access_key,
        aws_session_token=c.session_token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _admin_boto(e2e: E2E, service: str) -> Any:
    """As ``_boto``, once the admin's bootstrap key can sign AWS requests (its secret is sealed moments after
    start)."""
    eventually_sync(
        lambda: _boto(e2e, "sts").get_caller_identity(), timeout=30, interval=0.5, retry_on=(ClientError,)
    )
    return _boto(e2e, service)


def _error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


def _stages(sm: Any, name: str) -> dict[str, list[str]]:
    described = sm.describe_secret(SecretId=name)
    return {vid: sorted(labels) for vid, labels in described["VersionIdsToStages"].items()}


def test_boto3_runs_the_whole_lifecycle(e2e: E2E) -> None:
    sm = _admin_boto(e2e, "secretsmanager")
    run = uuid.uuid4().hex[:8]
    name = f"e2e/boto3-{run}"

    # create, put, get by label
    v1 = sm.create_secret(Name=name, SecretString="first", Description="boto3")["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="second")["VersionId"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "second"
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert (previous["VersionId"], previous["SecretString"]) == (v1, "first")
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["VersionId"] == v2

    # update-version-stage: AWSCURRENT back to v1 (AWSPREVIOUS follows to the version that had it) and a
    # custom label on v2
    sm.update_secret_version_stage(
        SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=v1, RemoveFromVersionId=v2
    )
    sm.update_secret_version_stage(SecretId=name, VersionStage="canary", MoveToVersionId=v2)
    assert _stages(sm, name) == {v1: ["AWSCURRENT"], v2: ["AWSPREVIOUS", "canary"]}
    assert sm.get_secret_value(SecretId=name, VersionStage="canary")["SecretString"] == "second"
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert {v["VersionId"]: sorted(v["VersionStages"]) for v in versions} == _stages(sm, name)

    # list with a filter, in pages of 2 through boto3's paginator (NextToken handled by boto3)
    prefix = f"e2e/paged-{run}/"
    expected = [f"{prefix}{i}" for i in range(5)]
    for each in expected:
        sm.create_secret(Name=each, SecretString="x")
    pages = list(
        sm.get_paginator("list_secrets").paginate(
            Filters=[{"Key": "name", "Values": [prefix]}], PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(page["SecretList"]) for page in pages] == [2, 2, 1]
    assert sorted(s["Name"] for page in pages for s in page["SecretList"]) == expected
    capped = sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": [prefix]}], PaginationConfig={"PageSize": 2, "MaxItems": 3}
    )
    assert len(capped.build_full_result()["SecretList"]) == 3

    # tag, find by tag, untag
    sm.tag_resource(SecretId=name, Tags=[{"Key": f"team-{run}", "Value": "payments"}])
    assert sm.describe_secret(SecretId=name)["Tags"] == [{"Key": f"team-{run}", "Value": "payments"}]
    tagged = sm.list_secrets(Filters=[{"Key": "tag-key", "Values": [f"team-{run}"]}])["SecretList"]
    assert [s["Name"] for s in tagged] == [name]
    sm.untag_resource(SecretId=name, TagKeys=[f"team-{run}"])
    assert not sm.describe_secret(SecretId=name).get("Tags")

    # delete with a recovery window: DeletedDate shown, reads refused with AWS's code and message; restore
    deleted = sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert deleted["Name"] == name and isinstance(deleted["DeletionDate"], dt.datetime)
    assert isinstance(sm.describe_secret(SecretId=name)["DeletedDate"], dt.datetime)
    marked = "You can't perform this operation on the secret because it was marked for deletion."
    with pytest.raises(ClientError) as refused:
        sm.get_secret_value(SecretId=name)
    assert _error(refused) == ("InvalidRequestException", marked)
    with pytest.raises(ClientError) as refused:
        sm.rotate_secret(SecretId=name, RotationLambdaARN="random-value")
    assert _error(refused) == ("InvalidRequestException", marked)
    sm.restore_secret(SecretId=name)
    assert "DeletedDate" not in sm.describe_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "first"

    # rotate with Coffer's built-in random-value rotator; AWSCURRENT moves to a new random version
    rotated = sm.rotate_secret(
        SecretId=name, RotationLambdaARN="random-value", RotationRules={"AutomaticallyAfterDays": 30}
    )
    new_version = rotated["VersionId"]
    assert new_version not in (v1, v2)

    def moved() -> dict[str, Any]:
        current = sm.get_secret_value(SecretId=name)
        assert current["VersionId"] == new_version
        return dict(current)

    current = eventually_sync(moved, timeout=60, interval=0.5)
    assert current["SecretString"] not in ("first", "second") and len(current["SecretString"]) == 32
    described = sm.describe_secret(SecretId=name)
    assert described["RotationEnabled"] is True
    assert described["RotationRules"]["AutomaticallyAfterDays"] == 30
    assert _stages(sm, name)[v1] == ["AWSPREVIOUS"]

    password = sm.get_random_password(PasswordLength=24, ExcludePunctuation=True)["RandomPassword"]
    assert len(password) == 24 and password.isalnum()

    # errors carry AWS's codes and messages
    with pytest.raises(ClientError) as refused:
        sm.get_secret_value(SecretId=f"e2e/none-{run}")
    assert _error(refused) == (
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
    )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as refused:
        sm.create_secret(Name=name, SecretString="again")
    code, message = _error(refused)
    assert code == "ResourceExistsException" and name in message
    with pytest.raises(ClientError) as refused:
        sm.get_secret_value(SecretId=name, VersionStage="nope")
    code, message = _error(refused)
    assert code == "ResourceNotFoundException" and "nope" in message
    with pytest.raises(ClientError) as refused:
        sm.get_random_password(PasswordLength=5000)
    code, message = _error(refused)
    assert code == "ValidationException"  # a shape constraint, as AWS answers it
    assert message.startswith("1 validation error detected: Value '5000' at 'passwordLength'")
    with pytest.raises(ClientError) as refused:
        sm.create_secret(Name=f"e2e/both-{run}", SecretString="s", SecretBinary=b"b")
    assert _error(refused) == (
        "InvalidParameterException",
        "You can't specify both a binary secret value and a string secret value in the same secret.",
    )


def test_aws_secretsmanager_caching_sees_a_new_value_after_its_refresh_interval(e2e: E2E) -> None:
    sm = _admin_boto(e2e, "secretsmanager")
    name = f"e2e/cached-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="before")
    cache = SecretCache(config=SecretCacheConfig(secret_refresh_interval=1), client=sm)
    assert cache.get_secret_string(name) == "before"

    sm.put_secret_value(SecretId=name, SecretString="after")  # AWSCURRENT moves to the new version

    def refreshed() -> str:
        value = cache.get_secret_string(name)
        assert value == "after"
        return str(value)

    assert eventually_sync(refreshed, timeout=30, interval=0.5) == "after"
    # ... and a rotation is seen the same way
    sm.rotate_secret(SecretId=name, RotationLambdaARN="random-value")

    def rotated() -> str:
        value = cache.get_secret_string(name)
        assert value not in ("before", "after")
        return str(value)

    assert (
        eventually_sync(rotated, timeout=60, interval=0.5)
        == sm.get_secret_value(SecretId=name)["SecretString"]
    )


def test_the_aws_cli_assumes_a_role_and_round_trips_kms(e2e: E2E, tmp_path: Path) -> None:
    aws = shlex.quote(str(AWS_CLI))
    run = uuid.uuid4().hex[:8]
    account = e2e.settings.account_id
    readable, other = f"e2e/role-read-{run}", f"e2e/role-other-{run}"
    sm = _admin_boto(e2e, "secretsmanager")
    arn = sm.create_secret(Name=readable, SecretString="for-the-role")["ARN"]
    sm.create_secret(Name=other, SecretString="not-for-the-role")
    role = f"reader-{run}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": account}, "Action": "sts:AssumeRole"}],
    }
    e2e.cli_json(
        "iam", "create-role", "--role-name", role, "--assume-role-policy-document", json.dumps(trust)
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}],
    }
    e2e.cli_json(
        "iam", "put-role-policy", "--role-name", role, "--policy-name", "read", "--policy-document",
        json.dumps(policy),
    )  # fmt: skip

    assumed = _shell(
        e2e,
        f"{aws} sts assume-role --role-arn arn:aws:iam::{account}:role/{role} --role-session-name s1",
    )
    assert assumed.returncode == 0, assumed.stderr
    answer = json.loads(assumed.stdout)
    creds = answer["Credentials"]
    assert answer["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{account}:assumed-role/{role}/s1"
    as_role = (
        f"export AWS_ACCESS_KEY_ID={shlex.quote(creds['AccessKeyId'])}"
        f" AWS_SECRET_ACCESS_KEY={shlex.quote(creds['SecretAccessKey'])}"
        f" AWS_SESSION_TOKEN={shlex.quote(creds['SessionToken'])}; "
    )
    me = _shell(e2e, as_role + f"{aws} sts get-caller-identity")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["Arn"] == answer["AssumedRoleUser"]["Arn"]

    allowed = _shell(e2e, as_role + f"{aws} secretsmanager get-secret-value --secret-id {readable}")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["SecretString"] == "for-the-role"
    for denied_call in (
        f"secretsmanager get-secret-value --secret-id {other}",
        f"secretsmanager put-secret-value --secret-id {readable} --secret-string changed",
    ):
        denied = _shell(e2e, as_role + f"{aws} {denied_call}")
        assert denied.returncode == 255, (denied_call, denied.returncode, denied.stderr)
        assert "An error occurred (AccessDeniedException)" in denied.stderr, denied.stderr
    assert sm.get_secret_value(SecretId=readable)["SecretString"] == "for-the-role"

    # kms encrypt / decrypt: binary blobs through fileb://, base64 text answers
    plaintext = bytes(range(256)) + b"\x00end"
    (tmp_path / "plain.bin").write_bytes(plaintext)
    key = _shell(e2e, f"{aws} kms create-key --description e2e-{run} --query KeyMetadata.KeyId --output text")
    assert key.returncode == 0, key.stderr
    key_id = key.stdout.strip()
    round_trip = _shell(
        e2e,
        f"cd {shlex.quote(str(tmp_path))}; "
        f"{aws} kms encrypt --key-id {key_id} --plaintext fileb://plain.bin "
        "--query CiphertextBlob --output text | base64 -d > cipher.bin; "
        f"{aws} kms decrypt --ciphertext-blob fileb://cipher.bin --query Plaintext --output text "
        "| base64 -d > decrypted.bin; "
        f"{aws} kms decrypt --ciphertext-blob fileb://cipher.bin --query KeyId --output text",
    )
    assert round_trip.returncode == 0, round_trip.stderr
    ciphertext = (tmp_path / "cipher.bin").read_bytes()
    assert plaintext not in ciphertext and len(ciphertext) > len(plaintext)
    assert (tmp_path / "decrypted.bin").read_bytes() == plaintext
    assert round_trip.stdout.strip().endswith(f":key/{key_id}")
    # the role may not use the key
    denied = _shell(
        e2e,
        as_role + f"cd {shlex.quote(str(tmp_path))}; "
        f"{aws} kms encrypt --key-id {key_id} --plaintext fileb://plain.bin",
    )
    assert denied.returncode == 255 and "AccessDeniedException" in denied.stderr, denied.stderr
