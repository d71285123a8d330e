"""WatchSecrets over the AWS-protocol endpoint as a long poll (issue 14): raw SigV4-signed requests
(botocore's signer; boto3 has no model for Coffer's WatchSecrets) against the real stack, with changes made
by boto3."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from coffer.client import AsyncCofferClient, Credentials

from .conftest import Gateway
from .test_gateway_aws_endpoint import boto, post, run, sign

pytestmark = pytest.mark.integration

TARGET = "secretsmanager.WatchSecrets"


async def poll(gw: Gateway, creds: Credentials, **members: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps(members).encode()
    status, _, document = await post(gw, body, sign(gw, creds, body, target=TARGET))
    return status, document


async def test_a_poll_waits_for_the_next_change_and_resumes_after_it(
    stack: Gateway, user: Credentials
) -> None:
    sm = boto(stack, "secretsmanager", user)
    created = await run(sm.create_secret, Name="poll/a", SecretString="one")
    await run(sm.create_secret, Name="other/b", SecretString="x")

    status, first = await poll(stack, user, WaitTimeSeconds=0, NamePrefix="poll/")
    assert status == 200, first
    assert first["Events"] == [] and first["ResumeToken"]  # nothing after "now"; where now is

    async def put_later() -> str:
        await asyncio.sleep(0.5)
        put = await run(sm.put_secret_value, SecretId="poll/a", SecretString="two")
        await run(sm.put_secret_value, SecretId="other/b", SecretString="y")  # filtered out
        return str(put["VersionId"])

    started = time.monotonic()
    writer = asyncio.create_task(put_later())
    status, waited = await poll(stack, user, ResumeToken=first["ResumeToken"], NamePrefix="poll/")
    took = time.monotonic() - started
    version = await writer
    assert status == 200, waited
    assert 0.4 < took < 10, took  # it waited for the change, and answered when it came (not after 20 s)
    [event] = waited["Events"]
    assert event["Kind"] == "VersionCreated" and event["Name"] == "poll/a"
    assert event["ARN"] == created["ARN"] and event["VersionId"] == version
    assert isinstance(event["EventTime"], float)
    assert waited["ResumeToken"] == event["ResumeToken"]

    # Resuming from an older token gives the same change again: nothing is lost between polls.
    status, again = await poll(
        stack, user, ResumeToken=first["ResumeToken"], NamePrefix="poll/", WaitTimeSeconds=1
    )
    assert status == 200 and [e["VersionId"] for e in again["Events"]] == [version]
    # After the answer's token nothing is pending for this filter: an empty answer once the wait runs out.
    started = time.monotonic()
    status, empty = await poll(
        stack, user, ResumeToken=waited["ResumeToken"], NamePrefix="poll/", WaitTimeSeconds=1
    )
    assert status == 200 and empty["Events"] == [] and time.monotonic() - started >= 0.9
    assert empty["ResumeToken"]


async def test_max_events_splits_a_backlog_into_consecutive_answers(
    stack: Gateway, user: Credentials
) -> None:
    sm = boto(stack, "secretsmanager", user)
    await run(sm.create_secret, Name="burst/x", SecretString="0")
    _, start = await poll(stack, user, WaitTimeSeconds=0, SecretIds=["burst/x"])
    versions = [
        (await run(sm.put_secret_value, SecretId="burst/x", SecretString=str(i)))["VersionId"]
        for i in range(5)
    ]
    seen: list[str] = []
    token = start["ResumeToken"]
    while len(seen) < 5:
        status, page = await poll(
            stack, user, ResumeToken=token, SecretIds=["burst/x"], MaxEvents=2, WaitTimeSeconds=2
        )
        assert status == 200 and 0 < len(page["Events"]) <= 2, page
        seen += [e["VersionId"] for e in page["Events"] if e["Kind"] == "VersionCreated"]
        token = page["ResumeToken"]
    assert seen == versions  # commit order, each once


async def test_bad_polls_get_aws_errors(stack: Gateway, user: Credentials) -> None:
    for members, code in (
        ({"WaitTimeSeconds": 21}, "InvalidParameterException"),
        ({"WaitTimeSeconds": -1}, "InvalidParameterException"),
        ({"MaxEvents": 0}, "InvalidParameterException"),
        ({"WaitTimeSeconds": "soon"}, "SerializationException"),
        ({"ResumeToken": "not-a-token", "WaitTimeSeconds": 0}, "InvalidParameterException"),
    ):
        status, body = await poll(stack, user, **members)
        assert (status, body.get("__type")) == (400, code), (members, body)
        assert body["message"], body


async def test_a_caller_without_watch_permission_is_refused(stack: Gateway) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.credentials) as admin:
        await admin.iam.create_user(user_name="poll-reader")
        await admin.iam.put_user_policy(
            user_name="poll-reader",
            policy_name="read",
            policy_document=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
                    ],
                }
            ),
        )
        key = (await admin.iam.create_access_key(user_name="poll-reader")).access_key
    reader = Credentials(key.access_key_id, key.secret_access_key)
    status, body = await poll(stack, reader, WaitTimeSeconds=0)
    assert (status, body.get("__type")) == (400, "AccessDeniedException"), body
    assert "secretsmanager:WatchSecrets" in body["message"]
