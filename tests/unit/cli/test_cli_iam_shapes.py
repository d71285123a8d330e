"""`coffer iam | sts | organizations`: commands and flags from the protos, AWS JSON out (IAM's timestamps as
ISO-8601 text in UTC, as the AWS CLI prints query-protocol services; Secrets Manager's in the local zone)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.iam.v1 import iam_pb2
from coffer.api.secrets.v1 import secrets_pb2
from coffer.cli import shapes
from coffer.cli.main import build_parser


def _ts(seconds: int) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime.fromtimestamp(seconds, dt.UTC))
    return ts


def test_iam_responses_print_like_the_aws_cli(in_zone: Callable[[str], None]) -> None:
    in_zone(
        "Asia/Kolkata"
    )  # +05:30: IAM stays in UTC (its wire is UTC text), Secrets Manager follows the zone
    user = iam_pb2.User(
        path="/",
        user_name="alice",
        user_id="AIDAEXAMPLE",
        arn="arn:aws:iam::000000000000:user/alice",
        create_date=_ts(1_796_000_000),
        tags=[iam_pb2.Tag(key="team", value="a")],
    )
    assert shapes.to_aws(iam_pb2.ListUsersResponse(users=[user])) == {
        "Users": [
            {
                "Path": "/",
                "UserName": "alice",
                "UserId": "AIDAEXAMPLE",
                "Arn": "arn:aws:iam::000000000000:user/alice",
                "CreateDate": "2026-11-30T00:53:20+00:00",
                "Tags": [{"Key": "team", "Value": "a"}],
            }
        ],
        "IsTruncated": False,
    }
    assert shapes.to_aws(iam_pb2.ListAccessKeysResponse()) == {"AccessKeyMetadata": [], "IsTruncated": False}
    assert shapes.to_aws(iam_pb2.DeleteUserResponse()) == {}
    described = shapes.to_aws(secrets_pb2.DescribeSecretResponse(created_date=_ts(1_796_000_000)))
    assert described["CreatedDate"] == "2026-11-30T06:23:20+05:30"


def test_iam_commands_and_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["iam", "create-user", "--user-name", "alice", "--tags", "Key=team,Value=a", "Key=env,Value=prod"]
    )
    request = shapes.request_from_args(iam_pb2.DESCRIPTOR.message_types_by_name["CreateUserRequest"], args)
    assert request == iam_pb2.CreateUserRequest(
        user_name="alice", tags=[iam_pb2.Tag(key="team", value="a"), iam_pb2.Tag(key="env", value="prod")]
    )
    args = parser.parse_args(["iam", "create-access-key"])  # the user name is optional (the caller's own)
    request = shapes.request_from_args(
        iam_pb2.DESCRIPTOR.message_types_by_name["CreateAccessKeyRequest"], args
    )
    assert not request.HasField("user_name")
    args = parser.parse_args(
        [
            "sts",
            "assume-role",
            "--role-arn",
            "arn:aws:iam::0:role/r",
            "--role-session-name",
            "s",
            "--duration-seconds",
            "900",
        ]
    )
    request = shapes.request_from_args(iam_pb2.DESCRIPTOR.message_types_by_name["AssumeRoleRequest"], args)
    assert request == iam_pb2.AssumeRoleRequest(
        role_arn="arn:aws:iam::0:role/r", role_session_name="s", duration_seconds=900
    )
    for argv in (
        ["iam", "update-access-key", "--access-key-id", "AKIA", "--status", "Inactive"],
        ["iam", "untag-role", "--role-name", "r", "--tag-keys", "a", "b"],
        ["organizations", "create-account", "--account-name", "a", "--email", "a@example.com"],
        ["organizations", "list-accounts"],
        ["sts", "get-caller-identity"],
    ):
        assert parser.parse_args(argv).handler is not None
