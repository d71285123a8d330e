"""The AWS-protocol endpoint's pipeline (``coffer.gateway.aws.server.AwsEndpoint``) with a fake directory and
fake operations (no services): what the operation sees bound while it runs (caller, access key id, user
agent, address), that nothing stays bound after, ``x-amzn-RequestId`` on every answer, refused requests
recorded once with their error, and a bug answered 500 with a generic message and no trace. Requests are
signed by botocore's own SigV4 signer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import botocore.auth
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from coffer.api.secrets.v1 import secrets_pb2
from coffer.audit_trail import PublicAudit
from coffer.gateway.aws import jsonproto
from coffer.gateway.aws.server import AwsEndpoint
from coffer.gateway.servicer import ROUTES, Operation
from coffer.rpc import context as ctx
from tests.unit.gateway.fakes import FakeDirectory, FakeTrail, Seen, alice_record

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
OLD_AKID = "AKIAOLDKEYNOSECRET22"
REGION = "local-1"
METHOD = "/coffer.api.secrets.v1.SecretsManagerService/ListSecrets"
TARGET = "secretsmanager.ListSecrets"


def _operations(seen: Seen) -> dict[str, Operation]:
    template = _template_operation()

    async def invoke(request: Any, remaining: float | None) -> Any:
        seen.calls.append(
            {
                "principal": ctx.current_principal(),
                "caller": ctx.caller_var.get(),
                "akid": ctx.access_key_id_var.get(),
                "user_agent": ctx.current_user_agent(),
                "source_ip": ctx.current_source_ip(),
                "request_id": ctx.current_request_id(),
                "request": request,
            }
        )
        if seen.fail is not None:
            raise seen.fail
        return secrets_pb2.ListSecretsResponse()

    return {
        METHOD: Operation(
            method=template.method,
            route=template.route,
            request_class=template.request_class,
            response_class=template.response_class,
            invoke=invoke,
        )
    }


def _template_operation() -> Operation:
    service = secrets_pb2.DESCRIPTOR.services_by_name["SecretsManagerService"]
    method = service.methods_by_name["ListSecrets"]

    async def never(request: Any, remaining: float | None) -> Any:
        raise AssertionError("not called")

    return Operation(
        method=method,
        route=ROUTES[METHOD],
        request_class=secrets_pb2.ListSecretsRequest,
        response_class=secrets_pb2.ListSecretsResponse,
        invoke=never,
    )


@dataclass
class Harness:
    client: TestClient[Any, Any]
    seen: Seen
    trail: FakeTrail

    def signed(self, body: bytes, *, akid: str = AKID, secret: str = SECRET) -> dict[str, str]:
        url = str(self.client.make_url("/"))
        request = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET},
        )
        botocore.auth.SigV4Auth(BotoCredentials(akid, secret), "secretsmanager", REGION).add_auth(request)
        headers = dict(request.headers.items())
        headers["User-Agent"] = "Boto3/1.44.8 test"
        return headers


@pytest.fixture
def max_concurrent() -> int:
    return 512


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch, max_concurrent: int) -> AsyncIterator[Harness]:
    monkeypatch.setattr(jsonproto, "TARGETS", {TARGET: METHOD})
    seen, trail = Seen(), FakeTrail()
    endpoint = AwsEndpoint(
        operations=_operations(seen),
        directory=FakeDirectory({AKID: alice_record(AKID, SECRET), OLD_AKID: alice_record(OLD_AKID, None)}),  # type: ignore[arg-type]
        region=REGION,
        public_audit=PublicAudit(
            trail=trail,
            sources={"coffer.api.secrets.v1.SecretsManagerService": "secretsmanager.amazonaws.com"},
            region=REGION,
            unadmitted_only=True,
            fail_closed=False,
        ),
        max_concurrent=max_concurrent,
    )
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", endpoint.handle)
    async with TestClient(TestServer(app)) as client:
        yield Harness(client, seen, trail)


async def test_the_operation_runs_with_the_caller_bound_and_nothing_stays_bound(harness: Harness) -> None:
    response = await harness.client.post("/", data=b"{}", headers=harness.signed(b"{}"))
    assert response.status == 200 and response.headers["x-amzn-RequestId"]
    assert response.headers["Content-Type"].startswith("application/x-amz-json-1.1")
    [call] = harness.seen.calls
    assert call["principal"] == "arn:aws:iam::000000000000:user/alice"
    assert call["caller"].access_key_id == AKID and call["akid"] == AKID
    assert call["user_agent"] == "Boto3/1.44.8 test" and call["source_ip"] == "127.0.0.1"
    assert call["request_id"] == response.headers["x-amzn-RequestId"]
    assert isinstance(call["request"], secrets_pb2.ListSecretsRequest)
    assert ctx.current_principal() is None and ctx.access_key_id_var.get() is None
    assert ctx.current_request_id() is None and ctx.current_user_agent() is None
    assert harness.trail.events == []  # admitted calls are recorded by the services that serve them


async def test_a_refused_request_is_recorded_once_and_never_runs(harness: Harness) -> None:
    headers = harness.signed(b"{}", secret="not-the-right-secret-key")
    response = await harness.client.post("/", data=b"{}", headers=headers)
    body = json.loads(await response.read())
    assert response.status == 400 and body["__type"] == "InvalidSignatureException"
    assert response.headers["x-amzn-RequestId"]
    assert harness.seen.calls == []
    [event] = harness.trail.events
    assert (event.event_name, event.error_code) == ("ListSecrets", "InvalidSignatureException")
    assert event.user_agent == "Boto3/1.44.8 test" and event.user_identity.type == "Unknown"
    assert ctx.current_request_id() is None


async def test_a_key_without_a_kept_secret_is_refused_with_advice(harness: Harness) -> None:
    headers = harness.signed(b"{}", akid=OLD_AKID)
    response = await harness.client.post("/", data=b"{}", headers=headers)
    body = json.loads(await response.read())
    assert response.status == 400 and body["__type"] == "UnrecognizedClientException"
    assert "new access key" in body["message"] and harness.seen.calls == []


async def test_a_bug_is_500_generic_and_a_dependency_503(harness: Harness) -> None:
    harness.seen.fail = KeyError("internal detail xyz")
    response = await harness.client.post("/", data=b"{}", headers=harness.signed(b"{}"))
    text = (await response.read()).decode()
    assert response.status == 500 and json.loads(text)["__type"] == "InternalServiceError"
    assert "xyz" not in text and "Traceback" not in text and response.headers["x-amzn-RequestId"]
    harness.seen.fail = ConnectionRefusedError("store down")
    response = await harness.client.post("/", data=b"{}", headers=harness.signed(b"{}"))
    assert response.status == 503 and json.loads(await response.read())["__type"] == "ServiceUnavailable"


@pytest.mark.parametrize("max_concurrent", [0])
async def test_requests_over_the_concurrency_limit_are_throttled(harness: Harness) -> None:
    response = await harness.client.post("/", data=b"{}", headers=harness.signed(b"{}"))
    body = json.loads(await response.read())
    assert response.status == 400 and body["__type"] == "ThrottlingException"
    assert response.headers["x-amzn-RequestId"] and harness.seen.calls == []
