"""coffer.core.secret_keys: the condition keys of a Secrets Manager request, built from the request and the
secret row (pure), and how a decision over them comes out with the policy engine."""

from __future__ import annotations

from datetime import UTC, datetime

from coffer.core.authorize import decide
from coffer.core.model import Tag
from coffer.core.policy import PolicyKind, parse_policy
from coffer.core.principal import Principal, PrincipalKind
from coffer.core.secret_keys import (
    RequestParams,
    SecretFacts,
    global_keys,
    policy_is_volatile,
    request_keys,
    secret_keys,
)

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbC123"
SECRET = SecretFacts(
    arn=ARN,
    name="app/db",
    account="000000000000",
    region="local-1",
    tags=(Tag("team", "pay"), Tag("env", "prod")),
    rotation_rotator="arn:aws:lambda:local-1:000000000000:function:rot",
)


def test_secret_keys_from_the_row() -> None:
    assert secret_keys(SECRET) == {
        "secretsmanager:SecretId": (ARN,),
        "secretsmanager:SecretPrimaryRegion": ("local-1",),
        "secretsmanager:ResourceTag/team": ("pay",),
        "aws:ResourceTag/team": ("pay",),
        "secretsmanager:ResourceTag/env": ("prod",),
        "aws:ResourceTag/env": ("prod",),
        "secretsmanager:resource/AllowRotationLambdaArn": (
            "arn:aws:lambda:local-1:000000000000:function:rot",
        ),
    }


def test_untagged_secret_without_rotation_has_only_id_and_region() -> None:
    bare = SecretFacts(arn=ARN, name="app/db", account="000000000000", region="local-1", primary_region="r2")
    assert secret_keys(bare) == {
        "secretsmanager:SecretId": (ARN,),
        "secretsmanager:SecretPrimaryRegion": ("r2",),
    }


def test_absent_parameters_give_no_keys() -> None:
    assert request_keys(RequestParams()) == {}


def test_request_parameter_keys() -> None:
    keys = request_keys(
        RequestParams(
            name="n",
            description="d",
            kms_key_id="alias/k",
            version_id="v1",
            version_stage="AWSPREVIOUS",
            rotation_lambda_arn="arn:rot",
            add_replica_regions=["r2", "r3"],
            block_public_policy=True,
            request_tags=[Tag("team", "pay"), Tag("env", "dev")],
        )
    )
    assert keys == {
        "secretsmanager:Name": ("n",),
        "secretsmanager:Description": ("d",),
        "secretsmanager:KmsKeyId": ("alias/k",),
        "secretsmanager:VersionId": ("v1",),
        "secretsmanager:VersionStage": ("AWSPREVIOUS",),
        "secretsmanager:RotationLambdaARN": ("arn:rot",),
        "secretsmanager:AddReplicaRegions": ("r2", "r3"),
        "secretsmanager:BlockPublicPolicy": ("true",),
        "aws:RequestTag/team": ("pay",),
        "aws:RequestTag/env": ("dev",),
        "aws:TagKeys": ("team", "env"),
    }


def test_delete_keys_carry_effective_values() -> None:
    assert request_keys(RequestParams(force_delete_without_recovery=False)) == {
        "secretsmanager:ForceDeleteWithoutRecovery": ("false",),
        "secretsmanager:RecoveryWindowInDays": ("30",),
    }
    assert request_keys(RequestParams(force_delete_without_recovery=False, recovery_window_in_days=7))[
        "secretsmanager:RecoveryWindowInDays"
    ] == ("7",)
    assert request_keys(RequestParams(force_delete_without_recovery=True)) == {
        "secretsmanager:ForceDeleteWithoutRecovery": ("true",)
    }


def test_untag_keys() -> None:
    assert request_keys(RequestParams(tag_keys=["owner"])) == {"aws:TagKeys": ("owner",)}


def test_global_keys() -> None:
    now = datetime(2026, 3, 4, 5, 6, 7, 891, tzinfo=UTC)
    assert global_keys(now=now, region="local-1", source_ip="10.1.2.3") == {
        "aws:CurrentTime": ("2026-03-04T05:06:07Z",),
        "aws:EpochTime": (str(int(now.timestamp())),),
        "aws:SecureTransport": ("true",),
        "aws:RequestedRegion": ("local-1",),
        "aws:SourceIp": ("10.1.2.3",),
    }
    assert "aws:SourceIp" not in global_keys(now=now, region="local-1", source_ip=None)


def test_volatile_policies() -> None:
    assert policy_is_volatile('{"Condition":{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}}')
    assert policy_is_volatile('{"Condition":{"IpAddress":{"AWS:SourceIP":"10.0.0.0/8"}}}')
    assert not policy_is_volatile('{"Condition":{"StringEquals":{"aws:ResourceTag/team":"x"}}}')


def _user(policy: str, **tags: str) -> Principal:
    return Principal(
        arn="arn:aws:iam::000000000000:user/alice",
        account="000000000000",
        kind=PrincipalKind.USER,
        name="alice",
        tags=tags,
        policies=(parse_policy(policy, PolicyKind.IDENTITY),),
    )


def test_keys_decide_with_the_engine() -> None:
    abac = (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"secretsmanager:GetSecretValue",'
        '"Resource":"*","Condition":{"StringEquals":{"secretsmanager:ResourceTag/team":"${aws:PrincipalTag/team}"},'
        '"StringEqualsIfExists":{"secretsmanager:VersionStage":"AWSCURRENT"}}}]}'
    )
    keys = secret_keys(SECRET)
    action = "secretsmanager:GetSecretValue"
    assert decide(_user(abac, team="pay"), action, ARN, resource_account="000000000000", keys=keys).allowed
    assert not decide(_user(abac, team="hr"), action, ARN, resource_account="000000000000", keys=keys).allowed
    staged = keys | request_keys(RequestParams(version_stage="AWSPREVIOUS"))
    assert not decide(
        _user(abac, team="pay"), action, ARN, resource_account="000000000000", keys=staged
    ).allowed
