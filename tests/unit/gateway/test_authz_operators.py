"""The gateway's authorization rules (``coffer.gateway.authz``): operator-only actions, and the detail of
rotation failures shown to operators only."""

from __future__ import annotations

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.core.targets import with_detail
from coffer.gateway.authz import OPERATOR_ACTIONS, Authorization, authorize

PUBLIC = "The rotation step setSecret failed: could not connect to the target database."


@pytest.mark.parametrize("action", sorted(OPERATOR_ACTIONS))
def test_operator_actions_need_an_operator(action: str) -> None:
    rules = Authorization(["user/admin", "user/ops"])
    for operator in ("user/admin", "user/ops"):
        rules(operator, action, "*")
    for other in ("user/reader", "service/rotation", "service/gateway"):
        with pytest.raises(errors.AccessDenied, match="operators only"):
            rules(other, action, "*")
    with pytest.raises(errors.AccessDenied):
        rules(None, action, "*")


def test_the_default_rules_make_the_admin_the_operator() -> None:
    authorize("user/admin", "secretsmanager:RegisterRotationFunction", "f")
    authorize("user/reader", "secretsmanager:GetSecretValue", "s")
    authorize("user/reader", "secretsmanager:ListRotationFunctions", "*")
    with pytest.raises(errors.AccessDenied):
        authorize("user/reader", "secretsmanager:RegisterRotationFunction", "f")


def attempts() -> sm.ListRotationAttemptsResponse:
    reply = sm.ListRotationAttemptsResponse(arn="a", name="n")
    attempt = reply.attempts.add(
        version_id="t", status="Failed", error=with_detail(PUBLIC, "ConnectionRefusedError")
    )
    attempt.steps.add(step="setSecret", status="failed", error=with_detail(PUBLIC, "ConnectionRefusedError"))
    attempt.steps.add(step="createSecret", status="succeeded")
    return reply


def test_rotation_failure_detail_is_for_operators_only() -> None:
    rules = Authorization()
    action = "secretsmanager:ListRotationAttempts"
    seen = rules.reply("user/reader", action, attempts())
    assert seen.attempts[0].error == PUBLIC
    assert [s.error for s in seen.attempts[0].steps] == [PUBLIC, ""]
    assert not seen.attempts[0].steps[1].HasField("error")
    operator = rules.reply("user/admin", action, attempts())
    assert "ConnectionRefusedError" in operator.attempts[0].error
    assert "ConnectionRefusedError" in operator.attempts[0].steps[0].error
    other = sm.DescribeSecretResponse(name="x")
    assert rules.reply("user/reader", "secretsmanager:DescribeSecret", other) is other
