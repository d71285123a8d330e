"""What the fuzzer found, pinned: each test is one request it generated that the stack mishandled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from coffer.api.audit.v1 import audit_pb2, audit_pb2_grpc
from coffer.api.iam.v1 import iam_pb2, iam_pb2_grpc
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.client.credentials import SigningInterceptor
from coffer.rpc.status import error_info_of
from coffer.rpc.tls import GATEWAY_HOST, name_options
from coffer.testing.stack import ServiceStack

pytestmark = [pytest.mark.integration]


@pytest.fixture
async def channel(fuzz_stack: ServiceStack) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the gateway signing every call as the admin."""
    assert fuzz_stack.admin is not None and fuzz_stack.gateway is not None
    creds = grpc.ssl_channel_credentials(root_certificates=fuzz_stack.ca_file.read_bytes())
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{fuzz_stack.gateway.port}",
        creds,
        options=name_options(GATEWAY_HOST),
        interceptors=[SigningInterceptor(fuzz_stack.admin)],
    ) as ch:
        yield ch


def _refused(exc: grpc.aio.AioRpcError, reason: str) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    found = error_info_of(exc)
    assert found is not None and found.reason == reason


async def test_a_nul_in_a_resource_name_is_a_validation_error_not_an_unwritable_audit_event(
    channel: grpc.aio.Channel,
) -> None:
    # The event's resource (the user's ARN) held the NUL; the trail's lookup columns are jsonb, which
    # refuses "\u0000", so the event could not be written and the call answered UNAVAILABLE.
    iam = iam_pb2_grpc.IdentityManagementServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await iam.DeleteAccessKey(
            iam_pb2.DeleteAccessKeyRequest(user_name="a\x00b", access_key_id="AKIAEXAMPLEEXAMPLE0"),
            timeout=30,
        )
    _refused(info.value, "ValidationError")


@pytest.mark.parametrize(
    "request_",
    [
        iam_pb2.ListUsersRequest(path_prefix="\x00"),
        iam_pb2.ListRolesRequest(path_prefix="/a\x00"),
        iam_pb2.DeleteAccessKeyRequest(access_key_id="AKIA\x00"),
        iam_pb2.UpdateAccessKeyRequest(access_key_id="AKIA\x00EXAMPLEEXAMPLE", status="Inactive"),
    ],
    ids=["ListUsers", "ListRoles", "DeleteAccessKey", "UpdateAccessKey"],
)
async def test_a_nul_in_an_iam_path_prefix_or_key_id_is_a_validation_error_not_internal(
    channel: grpc.aio.Channel, request_: object
) -> None:
    # PostgreSQL text cannot hold NUL: the value reached the SQL and the driver's error answered INTERNAL.
    iam = iam_pb2_grpc.IdentityManagementServiceStub(channel)
    call = getattr(iam, type(request_).__name__.removesuffix("Request"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request_, timeout=30)
    _refused(info.value, "ValidationError")


@pytest.mark.parametrize(
    "stamp",
    [Timestamp(seconds=-(2**63)), Timestamp(seconds=2**63 - 2), Timestamp(seconds=5, nanos=-(2**31))],
    ids=["seconds-min", "seconds-max", "nanos-negative"],
)
async def test_an_out_of_range_lookup_time_is_invalid_not_internal(
    channel: grpc.aio.Channel, stamp: Timestamp
) -> None:
    # The gateway's audit event (requestParameters: the request as JSON) and the store's query both
    # converted the Timestamp, which raised: INTERNAL, with the converter's message.
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    for request in (
        audit_pb2.LookupEventsRequest(start_time=stamp),
        audit_pb2.LookupEventsRequest(end_time=stamp),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await audit.LookupEvents(request, timeout=30)
        _refused(info.value, "InvalidTimeRangeException")


async def test_a_nul_in_a_key_description_is_a_validation_error_not_internal(
    channel: grpc.aio.Channel,
) -> None:
    # The description reached the kms's table (PostgreSQL text cannot hold NUL): INTERNAL.
    kms = kms_pb2_grpc.KeyManagementServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await kms.CreateKey(kms_pb2.CreateKeyRequest(description="\x00"), timeout=30)
    _refused(info.value, "ValidationException")
