"""What the fuzzer found, pinned: each test is one request it generated that the stack mishandled."""

from __future__ import annotations

import grpc
import pytest

from coffer.api.iam.v1 import iam_pb2, iam_pb2_grpc
from coffer.client.credentials import SigningInterceptor
from coffer.rpc.status import error_info_of
from coffer.rpc.tls import GATEWAY_HOST, name_options
from coffer.testing.stack import ServiceStack

pytestmark = [pytest.mark.integration]


async def test_a_nul_in_a_resource_name_is_a_validation_error_not_an_unwritable_audit_event(
    fuzz_stack: ServiceStack,
) -> None:
    # The event's resource (the user's ARN) held the NUL; the trail's lookup columns are jsonb, which
    # refuses "\u0000", so the event could not be written and the call answered UNAVAILABLE.
    assert fuzz_stack.admin is not None and fuzz_stack.gateway is not None
    creds = grpc.ssl_channel_credentials(root_certificates=fuzz_stack.ca_file.read_bytes())
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fuzz_stack.gateway.port}",
        creds,
        options=name_options(GATEWAY_HOST),
        interceptors=[SigningInterceptor(fuzz_stack.admin)],
    ) as channel:
        iam = iam_pb2_grpc.IdentityManagementServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await iam.DeleteAccessKey(
                iam_pb2.DeleteAccessKeyRequest(user_name="a\x00b", access_key_id="AKIAEXAMPLE"), timeout=30
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = error_info_of(info.value)
    assert found is not None and found.reason == "ValidationError"
