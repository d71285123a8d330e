"""GatewayApp: throttle → authorize → run → one audit line, for allowed, denied, throttled and failed calls
(fakes only)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.core.password import PasswordRequest
from coffer.core.principal import Principal, PrincipalKind
from coffer.core.throttle import RateGroup, Throttle
from coffer.gateway.app import GatewayApp
from coffer.gateway.authz import authorize
from coffer.gateway.servicer import password_request
from coffer.rpc.context import caller_var


@dataclass
class RecordingAudit:
    lines: list[dict[str, Any]] = field(default_factory=list)

    def record(self, **kw: Any) -> None:
        self.lines.append(kw)


def make_app(*, deny: bool = False) -> tuple[GatewayApp, RecordingAudit, list[tuple[str | None, str, str]]]:
    audit = RecordingAudit()
    decisions: list[tuple[str | None, str, str]] = []

    def decide(principal: str | None, action: str, resource: str) -> None:
        decisions.append((principal, action, resource))
        if deny:
            raise errors.AccessDenied("no")

    return GatewayApp(authorize=decide, audit=audit, random=random.Random(1)), audit, decisions


async def test_allowed_call_runs_and_is_audited() -> None:
    app, audit, decisions = make_app()

    async def run() -> str:
        return "response"

    result = await app.call(
        principal="user/a", request_id="r1", action="secretsmanager:GetSecretValue", resource="db/x", run=run
    )
    assert result == "response"
    assert decisions == [("user/a", "secretsmanager:GetSecretValue", "db/x")]
    assert audit.lines == [
        {
            "principal": "user/a",
            "action": "secretsmanager:GetSecretValue",
            "resource": "db/x",
            "outcome": "allowed",
            "request_id": "r1",
        }
    ]


async def test_denied_call_never_runs() -> None:
    app, audit, _ = make_app(deny=True)
    ran = False

    async def run() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(errors.AccessDenied):
        await app.call(principal="user/a", request_id="r", action="kms:CreateKey", resource="*", run=run)
    assert not ran
    assert audit.lines[0]["outcome"] == "denied"
    assert audit.lines[0]["error_code"] == "AccessDeniedException"


async def test_failed_call_is_audited_with_the_aws_error_name() -> None:
    app, audit, _ = make_app()

    async def run() -> None:
        raise errors.NotFound()

    with pytest.raises(errors.NotFound):
        await app.call(principal="user/a", request_id="r", action="x:Y", resource="s", run=run)
    assert audit.lines[0]["outcome"] == "failed"
    assert audit.lines[0]["error_code"] == "ResourceNotFoundException"


async def test_unavailable_dependencies_are_not_described_to_the_caller() -> None:
    app, audit, _ = make_app()

    async def run() -> None:
        raise errors.Unavailable("A Coffer service is unavailable (UNAVAILABLE): ipv4:10.0.0.7:7444 refused")

    with pytest.raises(errors.Unavailable) as info:
        await app.call(principal="user/a", request_id="r", action="x:Y", resource="s", run=run)
    assert info.value.code == "ServiceUnavailable"
    assert "10.0.0.7" not in info.value.message
    assert audit.lines[0]["outcome"] == "failed" and audit.lines[0]["error_code"] == "ServiceUnavailable"


def test_default_authorize_allows_authenticated_and_refuses_anonymous() -> None:
    authorize("user/admin", "secretsmanager:DeleteSecret", "db/prod")
    with pytest.raises(errors.AccessDenied):
        authorize(None, "secretsmanager:DeleteSecret", "db/prod")


def test_password_request_applies_aws_defaults() -> None:
    assert password_request(sm.GetRandomPasswordRequest()) == PasswordRequest()
    got = password_request(
        sm.GetRandomPasswordRequest(password_length=12, require_each_included_type=False, include_space=True)
    )
    assert got == PasswordRequest(password_length=12, require_each_included_type=False, include_space=True)


async def test_random_password_comes_from_the_injected_source() -> None:
    app, _, _ = make_app()
    pw = await app.random_password(PasswordRequest(password_length=20))
    assert len(pw) == 20


async def test_a_call_over_its_rate_is_refused_before_authorization_and_audited() -> None:
    audit = RecordingAudit()
    decisions: list[str] = []

    def decide(principal: str | None, action: str, resource: str) -> None:
        decisions.append(action)

    get = "secretsmanager:GetSecretValue"
    throttle = Throttle([RateGroup(2, (get,))], principal_share=1.0, clock=lambda: 0.0)
    app = GatewayApp(authorize=decide, audit=audit, random=random.Random(1), throttle=throttle)
    ran = 0

    async def run() -> None:
        nonlocal ran
        ran += 1

    arn = "arn:aws:iam::000000000000:user/a"
    token = caller_var.set(Principal(arn=arn, account="000000000000", kind=PrincipalKind.USER, name="a"))
    try:
        for _ in range(2):
            await app.call(principal=arn, request_id="r", action=get, resource="db/x", run=run)
        with pytest.raises(errors.Throttling):
            await app.call(principal=arn, request_id="r", action=get, resource="db/x", run=run)
        # another operation has its own rate (none here)
        await app.call(principal=arn, request_id="r", action="kms:Encrypt", resource="k", run=run)
        # Coffer's own services are not throttled
        caller_var.set(Principal(arn="service/rotation", account="", kind=PrincipalKind.SERVICE, name="r"))
        await app.call(principal="service/rotation", request_id="r", action=get, resource="db/x", run=run)
    finally:
        caller_var.reset(token)
    assert ran == 4 and decisions == [get, get, "kms:Encrypt", get]
    refused = audit.lines[2]
    assert refused["outcome"] == "denied" and refused["error_code"] == "ThrottlingException"
