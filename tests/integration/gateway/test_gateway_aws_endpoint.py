"""The gateway's AWS-protocol endpoint (issue 10) with clients nobody on the team wrote: boto3 against the
real stack (kms → store → gateway, in-process) over TLS with the deployment's CA; and raw HTTP for what AWS's
protocol refuses (each answer's status, ``__type`` and ``x-amzn-RequestId``), signed with botocore's own
SigV4 signer where a signature is needed. boto3 is synchronous: its calls run in a thread so the in-process
services keep serving."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import asyncpg
import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError

from coffer.client import AsyncCofferClient, Credentials
from coffer.gateway.aws.server import MAX_REQUEST_BYTES

from .conftest import Gateway

T = TypeVar("T")
JSON = "application/x-amz-json-1.1"
REGION = "local-1"
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


def aws_url(gw: Gateway) -> str:
    assert gw.runtime.aws is not None, "the test stack serves the AWS endpoint (COFFER_AWS_ADDR)"
    return f"https://127.0.0.1:{gw.runtime.aws.port}"


def boto(gw: Gateway, service: str, creds: Credentials, **kw: Any) -> Any:
    c = creds
    return boto3.session.Session().client(
        service,
        endpoint_url=aws_url(gw),
        verify=str(gw.ca_file),
        region_name=kw.pop("region_name", REGION),
        aws_access_key_id=c.access_key_id,
        aws_secret_access_key=c.secret_access_key,
        aws_session_token=c.session_token,
        config=NO_RETRIES,
        **kw,
    )


async def run(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kw)


def sign(
    gw: Gateway,
    creds: Credentials,
    body: bytes,
    *,
    target: str | None = "secretsmanager.ListSecrets",
    secret: str | None = None,
    region: str = REGION,
    service: str = "secretsmanager",
    content_type: str = JSON,
) -> dict[str, str]:
    """Headers of a request signed by botocore's SigV4 signer with ``creds`` (or their id and ``secret``)."""
    headers = {"Content-Type": content_type}
    if target:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=aws_url(gw) + "/", data=body, headers=headers)
    signer = BotoCredentials(creds.access_key_id, secret or creds.secret_access_key)
    botocore.auth.SigV4Auth(signer, service, region).add_auth(request)
    return dict(request.headers.items())


async def post(
    gw: Gateway, body: bytes, headers: dict[str, str], *, method: str = "POST"
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, JSON body) of one raw HTTPS request to the endpoint."""
    context = ssl.create_default_context(cafile=str(gw.ca_file))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, aws_url(gw) + "/", data=body, headers=headers, ssl=context) as response,
    ):
        raw = await response.read()
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {"raw": raw.decode(errors="replace")}
        return response.status, dict(response.headers), document


def error_of(exc: ClientError) -> tuple[str, str, int]:
    err = exc.response["Error"]
    return err["Code"], err.get("Message", ""), exc.response["ResponseMetadata"]["HTTPStatusCode"]


# --- boto3 ------------------------------------------------------------------------------------------------


async def test_boto3_creates_reads_writes_and_describes_a_secret(stack: Gateway, user: Credentials) -> None:
    sm = boto(stack, "secretsmanager", user)
    created = await run(sm.create_secret, Name="app/db", SecretString='{"user": "app"}', Description="d")
    assert created["Name"] == "app/db" and created["ARN"].startswith(f"arn:aws:secretsmanager:{REGION}:")
    assert created["ResponseMetadata"]["RequestId"]  # x-amzn-RequestId
    got = await run(sm.get_secret_value, SecretId="app/db")
    assert got["SecretString"] == '{"user": "app"}' and got["VersionStages"] == ["AWSCURRENT"]
    assert isinstance(got["CreatedDate"], dt.datetime)
    put = await run(sm.put_secret_value, SecretId=created["ARN"], SecretBinary=b"\x00\x01binary")
    assert put["VersionId"] != created["VersionId"]
    binary = await run(sm.get_secret_value, SecretId="app/db")
    assert binary["SecretBinary"] == b"\x00\x01binary"
    previous = await run(sm.get_secret_value, SecretId="app/db", VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == '{"user": "app"}'
    described = await run(sm.describe_secret, SecretId="app/db")
    assert described["Description"] == "d"
    assert described["VersionIdsToStages"] == {
        created["VersionId"]: ["AWSPREVIOUS"],
        put["VersionId"]: ["AWSCURRENT"],
    }


async def test_errors_reach_boto3_as_its_modelled_exceptions(stack: Gateway, user: Credentials) -> None:
    sm = boto(stack, "secretsmanager", user)
    with pytest.raises(sm.exceptions.ResourceNotFoundException) as missing:
        await run(sm.get_secret_value, SecretId="no/such/secret")
    code, message, status = error_of(missing.value)
    assert (code, status) == ("ResourceNotFoundException", 400) and "can't find" in message
    await run(sm.create_secret, Name="twice", SecretString="x")
    with pytest.raises(sm.exceptions.ResourceExistsException):
        await run(sm.create_secret, Name="twice", SecretString="y")


async def test_boto3_kms_encrypts_and_decrypts(stack: Gateway, user: Credentials) -> None:
    kms = boto(stack, "kms", user)
    key = (await run(kms.create_key, Description="payments"))["KeyMetadata"]
    assert key["KeyId"] and key["Enabled"] is True
    sealed = await run(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"card 4111", EncryptionContext={"a": "b"})
    opened = await run(kms.decrypt, CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext={"a": "b"})
    assert opened["Plaintext"] == b"card 4111" and opened["KeyId"] == key["Arn"]
    with pytest.raises(ClientError) as wrong_context:
        await run(kms.decrypt, CiphertextBlob=sealed["CiphertextBlob"], EncryptionContext={"a": "c"})
    assert error_of(wrong_context.value)[0] == "InvalidCiphertextException"
    assert error_of(wrong_context.value)[2] == 400


async def test_sts_identity_and_assumed_role_whose_permissions_are_the_roles(
    stack: Gateway, user: Credentials
) -> None:
    sts = boto(stack, "sts", user)
    me = await run(sts.get_caller_identity)
    assert me["Arn"].endswith(":user/aws") and me["Account"] == "000000000000"

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    reader = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
    }
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as client:
        role = (
            await client.iam.create_role(role_name="reader", assume_role_policy_document=json.dumps(trust))
        ).role
        await client.iam.put_role_policy(
            role_name="reader", policy_name="read", policy_document=json.dumps(reader)
        )
    sm = boto(stack, "secretsmanager", user)
    await run(sm.create_secret, Name="app/read-me", SecretString="v1")

    assumed = await run(sts.assume_role, RoleArn=role.arn, RoleSessionName="s1", DurationSeconds=3600)
    c = assumed["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and isinstance(c["Expiration"], dt.datetime)
    assert assumed["AssumedRoleUser"]["Arn"].endswith(":assumed-role/reader/s1")
    session = Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    as_role = boto(stack, "secretsmanager", session)
    assert (await run(as_role.get_secret_value, SecretId="app/read-me"))["SecretString"] == "v1"
    with pytest.raises(ClientError) as denied:
        await run(as_role.create_secret, Name="app/not-mine", SecretString="x")
    assert error_of(denied.value)[0] == "AccessDeniedException"
    role_sts = boto(stack, "sts", session)
    assert (await run(role_sts.get_caller_identity))["Arn"].endswith(":assumed-role/reader/s1")

    # The session token is part of the credentials: without it (or with another) the key is refused.
    forged = Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"][:-4] + "AAAA")
    with pytest.raises(ClientError) as bad_token:
        await run(boto(stack, "secretsmanager", forged).get_secret_value, SecretId="app/read-me")
    assert error_of(bad_token.value)[0] == "UnrecognizedClientException"


async def test_sts_errors_are_sts_xml_with_the_query_error_header(stack: Gateway, user: Credentials) -> None:
    sts = boto(stack, "sts", user)
    with pytest.raises(ClientError) as refused:
        await run(sts.assume_role, RoleArn="arn:aws:iam::000000000000:role/none", RoleSessionName="bad name!")
    code, _message, status = error_of(refused.value)
    assert status in (400, 403) and code
    headers = refused.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers.get("x-amzn-query-error", "").startswith(code + ";")
    assert refused.value.response["ResponseMetadata"]["RequestId"]


async def test_the_audit_event_of_an_aws_call_names_the_access_key_and_user_agent(
    stack: Gateway, user: Credentials, database_url: str
) -> None:
    sm = boto(stack, "secretsmanager", user)
    await run(sm.create_secret, Name="audited", SecretString="x")
    await run(sm.get_secret_value, SecretId="audited")
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT record FROM store.audit_events WHERE event_name = 'GetSecretValue' ORDER BY event_time"
        )
    finally:
        await conn.close()
    assert rows
    record = json.loads(rows[-1]["record"])
    assert record["userIdentity"]["accessKeyId"] == user.access_key_id
    assert record["userAgent"].startswith("Boto3/") and "botocore" in record["userAgent"].lower()
    assert record["sourceIPAddress"] == "127.0.0.1"
    assert record["requestParameters"] == {"secretId": "audited"}


# --- the protocol, raw ------------------------------------------------------------------------------------


async def test_unknown_target_bad_json_and_wrong_content_type(stack: Gateway, user: Credentials) -> None:
    status, headers, body = await post(
        stack, b"{}", sign(stack, user, b"{}", target="secretsmanager.NoSuchThing")
    )
    assert (status, body["__type"]) == (400, "UnknownOperationException") and headers["x-amzn-RequestId"]
    status, _, body = await post(stack, b"{}", sign(stack, user, b"{}", target="Route53.ListHostedZones"))
    assert (status, body["__type"]) == (400, "UnknownOperationException")

    bad = b'{"SecretId": '
    status, headers, body = await post(
        stack, bad, sign(stack, user, bad, target="secretsmanager.GetSecretValue")
    )
    assert (status, body["__type"]) == (400, "SerializationException") and headers["x-amzn-RequestId"]
    listed = b"[1, 2]"
    status, _, body = await post(stack, listed, sign(stack, user, listed))
    assert (status, body["__type"]) == (400, "SerializationException")
    deep = b"[" * 100_000 + b"]" * 100_000  # deeper than the parser goes: refused, not a 500
    status, _, body = await post(stack, deep, sign(stack, user, deep))
    assert (status, body["__type"]) == (400, "SerializationException"), body

    status, headers, body = await post(stack, b"{}", sign(stack, user, b"{}", content_type="text/plain"))
    assert (status, body["__type"]) == (404, "UnknownOperationException") and headers["x-amzn-RequestId"]
    status, _, body = await post(stack, b"", {}, method="GET")
    assert (status, body["__type"]) == (404, "UnknownOperationException")


async def test_an_oversized_body_is_refused_cleanly(stack: Gateway, user: Credentials) -> None:
    big = json.dumps({"Name": "big", "SecretString": "x" * (MAX_REQUEST_BYTES + 1)}).encode()
    status, headers, body = await post(
        stack, big, sign(stack, user, big, target="secretsmanager.CreateSecret")
    )
    assert status == 413 and body["__type"] == "RequestEntityTooLargeException"
    assert headers["x-amzn-RequestId"] and "Traceback" not in json.dumps(body)


async def test_authentication_failures_have_aws_codes(
    stack: Gateway, user: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"{}"
    status, headers, answer = await post(
        stack, body, {"Content-Type": JSON, "X-Amz-Target": "secretsmanager.ListSecrets"}
    )
    assert (status, answer["__type"]) == (400, "MissingAuthenticationTokenException")
    assert headers["x-amzn-RequestId"]

    status, _, answer = await post(
        stack, body, sign(stack, user, body, secret="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    )
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")

    headers = sign(stack, user, body)
    status, _, answer = await post(stack, b'{"MaxResults": 1}', headers)  # the body signed was {}
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")

    status, _, answer = await post(stack, body, sign(stack, user, body, region="local-2"))
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")
    assert "local-2" in answer["message"]

    status, _, answer = await post(
        stack, body, sign(stack, user, body, service="kms")
    )  # a secretsmanager target
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")

    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: real() - dt.timedelta(minutes=6))
    replay = sign(stack, user, body)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", real)
    status, _, answer = await post(stack, body, replay)
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")
    assert answer["message"].startswith("Signature expired")

    unknown = dict(sign(stack, user, body))
    unknown["Authorization"] = unknown["Authorization"].replace(user.access_key_id, "AKIA" + "Q" * 16)
    status, _, answer = await post(stack, body, unknown)
    assert (status, answer["__type"]) == (400, "UnrecognizedClientException")

    # A correctly signed request passes the same checks (the failures above are the signature's).
    status, _, answer = await post(stack, body, sign(stack, user, body))
    assert status == 200 and "SecretList" in answer


async def test_refused_calls_are_in_the_audit_trail(
    stack: Gateway, user: Credentials, database_url: str
) -> None:
    body = b'{"SecretId": "app/db"}'
    headers = sign(stack, user, body, target="secretsmanager.GetSecretValue", secret="not-the-secret")
    headers["User-Agent"] = "refused-agent/1.0"
    status, _, answer = await post(stack, body, headers)
    assert (status, answer["__type"]) == (400, "InvalidSignatureException")
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT record FROM store.audit_events WHERE error_code = 'InvalidSignatureException'"
        )
    finally:
        await conn.close()
    assert len(rows) == 1
    record = json.loads(rows[0]["record"])
    assert record["eventName"] == "GetSecretValue" and record["userIdentity"]["type"] == "Unknown"
    assert record["userAgent"] == "refused-agent/1.0" and record["requestParameters"] == {
        "secretId": "app/db"
    }
    assert "not-the-secret" not in rows[0]["record"]
