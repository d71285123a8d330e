"""Attacks on rotation-function registration, against the real gateway and store, now refused: a caller who
is not an operator registers or deletes a function (AccessDeniedException); an operator registers one at the
cloud metadata address, a link-local address, or one of Coffer's own endpoints — the store's port among
them — (InvalidParameterException), though 127.0.0.1 is allowed in this stack."""

from __future__ import annotations

from typing import Any

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.aio import AsyncCofferClient
from coffer.core import errors

pytestmark = pytest.mark.integration


async def test_only_operators_register_and_delete_rotation_functions(stack: Any) -> None:
    token = await stack.services.credential("user/reader")
    reader = AsyncCofferClient(stack.endpoint, stack.ca_file, token)
    try:
        await reader.call("ListRotationFunctions")  # a new access key works at once
        with pytest.raises(errors.AccessDenied) as refused:
            await reader.call("RegisterRotationFunction", name="mine", endpoint="10.1.2.3:7600")
        assert refused.value.code == "AccessDeniedException"
        registered = await stack.client.call(
            "RegisterRotationFunction", name="ops", endpoint="127.0.0.1:7600"
        )
        assert isinstance(registered, sm.RegisterRotationFunctionResponse)
        with pytest.raises(errors.AccessDenied):
            await reader.call("DeleteRotationFunction", function_id="ops")
        listed = await reader.call("ListRotationFunctions")
        assert isinstance(listed, sm.ListRotationFunctionsResponse)
        assert [f.name for f in listed.functions] == ["ops"]
        await stack.client.call("DeleteRotationFunction", function_id="ops")
    finally:
        await reader.close()


async def test_function_endpoints_must_pass_the_target_policy(stack: Any) -> None:
    env = stack.env
    # (the stack binds each service to port 0 and starts the gateway after the store: the store knows its
    # own port and the kms's; a deployment configures every address, and all are refused the same way)
    store_port = env["COFFER_STORE_ADDR"].rsplit(":", 1)[1]
    own = [env["COFFER_STORE_ADDR"], env["COFFER_KMS_ADDR"], f"localhost:{store_port}"]
    refused_endpoints = [
        "169.254.169.254:80",
        "169.254.10.20:8080",
        "0.0.0.0:7600",
        "[::1]:7600",  # loopback, and not in this stack's allow-list (127.0.0.1 only)
        "no-such-host.invalid:7600",
        *own,
    ]
    for index, endpoint in enumerate(refused_endpoints):
        with pytest.raises(errors.InvalidParameter) as refused:
            await stack.client.call("RegisterRotationFunction", name=f"f{index}", endpoint=endpoint)
        assert refused.value.code == "InvalidParameterException", endpoint
    listed = await stack.client.call("ListRotationFunctions")
    assert isinstance(listed, sm.ListRotationFunctionsResponse)
    assert list(listed.functions) == []
