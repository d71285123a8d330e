"""STS's query protocol (aws-wire.md §4): forms as botocore's own serializer writes them, answers and errors
read back by botocore's own parser, through a real botocore STS client whose request never leaves the
process (``before-send`` answers it with what ``coffer.gateway.aws.query`` makes of it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.iam.v1 import iam_pb2 as pb
from coffer.core import errors
from coffer.gateway.aws import query

REQUEST_ID = "c6104cbe-af31-11e0-8154-cbc7ccf896c7"
ROLE_ARN = "arn:aws:iam::111122223333:role/app"
ASSUME = "/coffer.api.iam.v1.SecurityTokenService/AssumeRole"
WHOAMI = "/coffer.api.iam.v1.SecurityTokenService/GetCallerIdentity"
EXPIRES = dt.datetime(2026, 12, 1, 13, 0, 0, tzinfo=dt.UTC)


class _Raw:
    """The raw body of a botocore response."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


class Fake:
    """An STS client wired to ``query``: each call's form goes through ``sts_request``, ``answer`` stands in
    for the service, and its response or error through ``sts_response`` / ``sts_error``."""

    def __init__(self, answer: Callable[[Message], Message] | None = None) -> None:
        self.answer = answer or (lambda message: pb.GetCallerIdentityResponse())
        self.calls: list[tuple[str, Message]] = []
        self.forms: list[dict[str, list[str]]] = []
        self.statuses: list[int] = []
        self.client = botocore.session.get_session().create_client(
            "sts",
            region_name="local-1",
            endpoint_url="https://coffer.example:8443",
            aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
            aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            config=Config(retries={"total_max_attempts": 1}),
        )
        self.client.meta.events.register("before-send", self._send)

    def _send(self, request: Any, **_: Any) -> AWSResponse:
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        form = parse_qs(body, keep_blank_values=True)
        self.forms.append(form)
        try:
            method, message = query.sts_request(form)
            self.calls.append((method, message))
            status, xml = 200, query.sts_response(method, self.answer(message), REQUEST_ID)
        except errors.CofferError as exc:
            status, xml = query.sts_error(exc, REQUEST_ID)
        self.statuses.append(status)
        return AWSResponse(request.url, status, {}, _Raw(xml))

    def refusal(self, operation: str, **params: Any) -> dict[str, str]:
        with pytest.raises(ClientError) as caught:
            getattr(self.client, operation)(**params)
        error: dict[str, str] = caught.value.response["Error"]
        return error


def assumed(message: Message) -> Message:
    assert isinstance(message, pb.AssumeRoleRequest)
    expiration = Timestamp()
    expiration.FromDatetime(EXPIRES)
    return pb.AssumeRoleResponse(
        credentials=pb.Credentials(
            access_key_id="ASIAQ3EGUWQ4EXAMPLE1",
            secret_access_key="secret/with+chars&<>",
            session_token="FwoGZXIvYXdzEXAMPLETOKEN==",
            expiration=expiration,
        ),
        assumed_role_user=pb.AssumedRoleUser(
            assumed_role_id=f"AROAQ3EGUWQ4EXAMPLE2:{message.role_session_name}",
            arn=f"arn:aws:sts::111122223333:assumed-role/app/{message.role_session_name}",
        ),
    )


def form(**members: str | Sequence[str]) -> dict[str, list[str]]:
    out = {"Version": ["2011-06-15"]}
    for key, value in members.items():
        out[key.replace("__", ".")] = [value] if isinstance(value, str) else list(value)
    return out


def refused(members: Mapping[str, Sequence[str]], code: str) -> str:
    with pytest.raises(errors.CofferError) as caught:
        query.sts_request(members)
    assert caught.value.code == code
    status, _ = query.sts_error(caught.value, REQUEST_ID)
    assert status == 400
    return caught.value.message


# --- requests and answers through botocore ------------------------------------------------------------------


def test_get_caller_identity_round_trip() -> None:
    fake = Fake(
        lambda message: pb.GetCallerIdentityResponse(
            user_id="AIDAQ3EGUWQ4EXAMPLE3", account="111122223333", arn="arn:aws:iam::111122223333:user/alice"
        )
    )
    answer = fake.client.get_caller_identity()
    assert fake.forms == [{"Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]}]
    assert fake.calls == [(WHOAMI, pb.GetCallerIdentityRequest())]
    assert answer["UserId"] == "AIDAQ3EGUWQ4EXAMPLE3"
    assert answer["Account"] == "111122223333"
    assert answer["Arn"] == "arn:aws:iam::111122223333:user/alice"
    assert answer["ResponseMetadata"]["RequestId"] == REQUEST_ID


def test_assume_role_round_trip() -> None:
    fake = Fake(assumed)
    answer = fake.client.assume_role(
        RoleArn=ROLE_ARN,
        RoleSessionName="s1",
        DurationSeconds=7200,
        Tags=[{"Key": "team", "Value": "a&b=c <d>"}, {"Key": "cost centre", "Value": ""}],
    )
    method, message = fake.calls[0]
    assert method == ASSUME
    assert message == pb.AssumeRoleRequest(
        role_arn=ROLE_ARN,
        role_session_name="s1",
        duration_seconds=7200,
        tags=[pb.Tag(key="team", value="a&b=c <d>"), pb.Tag(key="cost centre", value="")],
    )
    creds = answer["Credentials"]
    assert creds["AccessKeyId"] == "ASIAQ3EGUWQ4EXAMPLE1"
    assert creds["SecretAccessKey"] == "secret/with+chars&<>"
    assert creds["SessionToken"] == "FwoGZXIvYXdzEXAMPLETOKEN=="
    assert creds["Expiration"] == EXPIRES
    assert answer["AssumedRoleUser"] == {
        "AssumedRoleId": "AROAQ3EGUWQ4EXAMPLE2:s1",
        "Arn": "arn:aws:sts::111122223333:assumed-role/app/s1",
    }
    assert answer["ResponseMetadata"]["RequestId"] == REQUEST_ID


def test_assume_role_without_optional_members_leaves_them_unset() -> None:
    fake = Fake(assumed)
    fake.client.assume_role(RoleArn=ROLE_ARN, RoleSessionName="s1", Tags=[])
    assert fake.forms[0]["Tags"] == [""]  # botocore's empty list
    _, message = fake.calls[0]
    assert isinstance(message, pb.AssumeRoleRequest)
    assert not message.HasField("duration_seconds") and not message.tags


def test_the_response_document_has_stss_namespace_wrapper_and_iso_expiration() -> None:
    xml = query.sts_response(ASSUME, assumed(pb.AssumeRoleRequest(role_session_name="s1")), REQUEST_ID)
    text = xml.decode()
    assert text.startswith('<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">')
    assert "<AssumeRoleResult><Credentials>" in text
    assert "<Expiration>2026-12-01T13:00:00Z</Expiration>" in text
    assert "<SecretAccessKey>secret/with+chars&amp;&lt;&gt;</SecretAccessKey>" in text
    assert text.endswith(
        f"<ResponseMetadata><RequestId>{REQUEST_ID}</RequestId></ResponseMetadata></AssumeRoleResponse>"
    )


@pytest.mark.parametrize(
    ("params", "member"),
    [
        ({"Policy": '{"Version":"2012-10-17","Statement":[]}'}, "Policy"),
        ({"PolicyArns": [{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]}, "PolicyArns"),
        ({"Tags": [{"Key": "k", "Value": "v"}], "TransitiveTagKeys": ["k"]}, "TransitiveTagKeys"),
        ({"ExternalId": "ext-123"}, "ExternalId"),
        ({"SerialNumber": "arn:aws:iam::111122223333:mfa/alice", "TokenCode": "123456"}, "SerialNumber"),
        ({"SourceIdentity": "alice"}, "SourceIdentity"),
        ({"ProvidedContexts": [{"ProviderArn": "arn:aws:iam::aws:contextProvider/x"}]}, "ProvidedContexts"),
    ],
)
def test_members_coffer_cannot_honour_are_refused_not_dropped(params: dict[str, Any], member: str) -> None:
    fake = Fake(assumed)
    error = fake.refusal("assume_role", RoleArn=ROLE_ARN, RoleSessionName="s1", **params)
    assert fake.calls == [] and fake.statuses == [400]
    assert error["Code"] == "ValidationError" and error["Type"] == "Sender"
    assert error["Message"] == (
        f"The AssumeRole parameter {member} is not supported by Coffer (the session would not be what was "
        "asked for): leave it out."
    )


def test_empty_lists_of_unsupported_members_ask_for_nothing() -> None:
    fake = Fake(assumed)
    fake.client.assume_role(RoleArn=ROLE_ARN, RoleSessionName="s1", PolicyArns=[], TransitiveTagKeys=[])
    assert fake.forms[0]["PolicyArns"] == [""] and fake.calls[0][0] == ASSUME


def test_an_sts_action_coffer_does_not_serve_is_invalid_action() -> None:
    fake = Fake()
    error = fake.refusal("get_session_token")
    assert fake.statuses == [400]
    assert error["Code"] == "InvalidAction"
    assert error["Message"] == (
        "Could not find operation GetSessionToken for version 2011-06-15. Coffer's STS serves AssumeRole and "
        "GetCallerIdentity (version 2011-06-15)."
    )


# --- forms refused at the protocol level ------------------------------------------------------------------


def test_action_and_version_are_required_and_checked() -> None:
    assert refused({"Version": ["2011-06-15"]}, "MissingAction") == (
        "The request is missing an action or a required parameter."
    )
    assert refused({"Action": ["GetCallerIdentity"]}, "MissingParameter") == (
        "The request must contain the parameter Version."
    )
    message = refused({"Action": ["GetCallerIdentity"], "Version": ["2010-05-08"]}, "InvalidAction")
    assert message.startswith("Could not find operation GetCallerIdentity for version 2010-05-08.")
    assert refused(form(Action="DeleteEverything"), "InvalidAction").startswith(
        "Could not find operation DeleteEverything for version 2011-06-15."
    )


def test_required_members_are_missing_parameters() -> None:
    assert refused(form(Action="AssumeRole", RoleSessionName="s1"), "MissingParameter") == (
        "The request must contain the parameter RoleArn."
    )
    assert refused(form(Action="AssumeRole", RoleArn=ROLE_ARN), "MissingParameter") == (
        "The request must contain the parameter RoleSessionName."
    )


def test_a_member_given_twice_is_refused() -> None:
    message = refused(
        form(
            Action="AssumeRole",
            RoleArn=[ROLE_ARN, "arn:aws:iam::111122223333:role/admin"],
            RoleSessionName="s",
        ),
        "ValidationError",
    )
    assert message == "The parameter RoleArn was given 2 times; give it once."


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "an hour",
            "Value 'an hour' for parameter DurationSeconds is invalid: it must be a whole number of seconds.",
        ),
        (
            "3600.5",
            "Value '3600.5' for parameter DurationSeconds is invalid: it must be a whole number of seconds.",
        ),
        (
            "99999999999",
            "1 validation error detected: Value '99999999999' at 'durationSeconds' failed to satisfy "
            "constraint: Member must have value less than or equal to 43200",
        ),
        (
            "-99999999999",
            "1 validation error detected: Value '-99999999999' at 'durationSeconds' failed to satisfy "
            "constraint: Member must have value greater than or equal to 900",
        ),
    ],
)
def test_duration_must_be_an_int32(value: str, expected: str) -> None:
    members = form(Action="AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s1", DurationSeconds=value)
    assert refused(members, "ValidationError") == expected


def test_in_range_durations_reach_the_store_unjudged() -> None:
    # bounds (900..43200, the role's maximum) are the store's to decide, with its texts
    members = form(Action="AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s1", DurationSeconds="60")
    _, message = query.sts_request(members)
    assert isinstance(message, pb.AssumeRoleRequest) and message.duration_seconds == 60


def test_tag_entries_need_key_and_value_and_keep_index_order() -> None:
    members = form(
        Action="AssumeRole",
        RoleArn=ROLE_ARN,
        RoleSessionName="s1",
        Tags__member__2__Key="b",
        Tags__member__2__Value="2",
        Tags__member__10__Key="c",
        Tags__member__10__Value="3",
        Tags__member__1__Key="a",
        Tags__member__1__Value="1",
    )
    _, message = query.sts_request(members)
    assert isinstance(message, pb.AssumeRoleRequest)
    assert [(t.key, t.value) for t in message.tags] == [("a", "1"), ("b", "2"), ("c", "3")]
    del members["Tags.member.2.Value"]
    assert refused(members, "ValidationError") == (
        "1 validation error detected: Value null at 'tags.2.member.value' failed to satisfy constraint: "
        "Member must not be null"
    )


@pytest.mark.parametrize(
    "key", ["Tags.member.0.Key", "Tags.member.01.Key", "Tags.member.1.Name", "Tags", "Foo"]
)
def test_unknown_members_are_refused(key: str) -> None:
    members = form(Action="AssumeRole", RoleArn=ROLE_ARN, RoleSessionName="s1")
    members[key] = ["x"]
    assert refused(members, "ValidationError") == f"{key} is not a parameter of AssumeRole."


def test_get_caller_identity_takes_no_members() -> None:
    assert refused(form(Action="GetCallerIdentity", RoleArn=ROLE_ARN), "ValidationError") == (
        "RoleArn is not a parameter of GetCallerIdentity."
    )


# --- errors as botocore reads them -------------------------------------------------------------------------

_OUTPUT = botocore.session.get_session().get_service_model("sts").operation_model("AssumeRole").output_shape


def parsed_error(error: errors.CofferError) -> tuple[int, dict[str, str]]:
    status, xml = query.sts_error(error, REQUEST_ID)
    parsed = create_parser("query").parse({"status_code": status, "headers": {}, "body": xml}, _OUTPUT)
    assert parsed["ResponseMetadata"]["RequestId"] == REQUEST_ID
    return status, parsed["Error"]


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            errors.AccessDenied(
                "User: arn:aws:iam::111122223333:user/bob is not authorized to perform: sts:AssumeRole "
                f"on resource: {ROLE_ARN}"
            ),
            403,
            "AccessDenied",
        ),
        (errors.Unauthenticated(), 403, "InvalidClientTokenId"),
        (errors.Unauthenticated("bad", code="InvalidClientTokenId"), 403, "InvalidClientTokenId"),
        (errors.Unauthenticated("x", code="InvalidSignatureException"), 403, "SignatureDoesNotMatch"),
        (errors.Unauthenticated("x", code="ExpiredTokenException"), 403, "ExpiredToken"),
        (errors.Unauthenticated("x", code="IncompleteSignatureException"), 400, "IncompleteSignature"),
        (
            errors.Unauthenticated("x", code="MissingAuthenticationTokenException"),
            403,
            "MissingAuthenticationToken",
        ),
        (errors.Validation("x"), 400, "ValidationError"),
        (errors.IamValidation("x"), 400, "ValidationError"),
        (errors.Throttling(), 400, "Throttling"),
        (errors.Throttling("slow", code="RateExceeded"), 400, "Throttling"),
        (
            errors.InvalidParameter("x", code="MalformedPolicyDocumentException"),
            400,
            "MalformedPolicyDocument",
        ),
        (errors.InvalidParameter("x", code="InvalidInput"), 400, "InvalidInput"),
        (errors.IamLimitExceeded("x"), 400, "LimitExceeded"),
        (errors.Unavailable(), 503, "ServiceUnavailable"),
        (errors.KmsSealed(), 503, "ServiceUnavailable"),
        (errors.Aborted(), 503, "ServiceUnavailable"),
    ],
)
def test_errors_carry_stss_codes_and_statuses(error: errors.CofferError, status: int, code: str) -> None:
    got_status, parsed = parsed_error(error)
    assert (got_status, parsed["Code"], parsed["Message"]) == (status, code, error.message)
    assert parsed["Type"] == ("Receiver" if status >= 500 else "Sender")


@pytest.mark.parametrize(
    "error",
    [
        errors.Internal("Traceback (most recent call last): db password=hunter2"),
        errors.CofferError("boom"),
        errors.EncryptionFailure(),
    ],
)
def test_internal_errors_say_nothing_of_themselves(error: errors.CofferError) -> None:
    status, parsed = parsed_error(error)
    assert status == 500
    assert parsed == {
        "Type": "Receiver",
        "Code": "InternalFailure",
        "Message": "The request processing has failed because of an unknown error, exception or failure.",
    }


def test_messages_with_markup_and_control_characters_stay_parseable() -> None:
    message = "1 validation error detected: Value '<a&b>\"\x01\x7f' at 'roleSessionName' failed"
    status, parsed = parsed_error(errors.IamValidation(message))
    assert status == 400
    assert parsed["Message"] == message.replace("\x01", "\\x01")
