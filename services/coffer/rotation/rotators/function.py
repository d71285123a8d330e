"""Custom rotation functions: a gRPC ``coffer.api.rotation.v1.RotationFunctionService`` an operator runs and
registers (RegisterRotationFunction). The worker looks the function up by ARN through the public
ListRotationFunctions and calls ``Rotate`` once per step over mutual TLS: it presents the rotation service's
own certificate (so the function can check who calls it) and trusts the CA registered with the function (or
the deployment's own CA). The endpoint must pass the rotation target policy: it is resolved and checked
before each step, and the channel goes to the checked address (the certificate is still verified against the
endpoint's host name, or the registered server name).

What callers see of a failure: the function's own answer (its status code and message) when it answered
deliberately; the same generic words for everything that says what is (not) listening at the endpoint —
refused by the policy, unreachable, not a rotation function, TLS failures — with the cause in the detail.
"""

from __future__ import annotations

import grpc

from coffer.api.rotation.v1 import rotation_pb2, rotation_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core.targets import UNREACHABLE_FUNCTION, TargetRefused, split_endpoint
from coffer.rotation.rotators.base import (
    CREATE_SECRET,
    FINISH_SECRET,
    SET_SECRET,
    TEST_SECRET,
    RotationStepError,
    StepContext,
    TargetUnreachable,
)
from coffer.targets import TargetGuard

STEP_TIMEOUT_SECONDS = 300.0
#: Status codes that describe the endpoint rather than the function's answer: shown generically.
_TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class FunctionRotator:
    """Calls one registered rotation function. ``close()`` releases its channel."""

    def __init__(
        self,
        function: sm.RotationFunction,
        *,
        default_ca_pem: bytes,
        targets: TargetGuard | None = None,
        client_key_pem: bytes | None = None,
        client_cert_pem: bytes | None = None,
        timeout: float = STEP_TIMEOUT_SECONDS,
    ) -> None:
        self.name = function.arn
        self._function = function
        self._targets = targets or TargetGuard.default()
        self._ca = function.ca_pem.encode("utf-8") if function.ca_pem else default_ca_pem
        self._client_key = client_key_pem
        self._client_cert = client_cert_pem
        self._channel: grpc.aio.Channel | None = None
        self._stub: rotation_pb2_grpc.RotationFunctionServiceStub | None = None
        self._timeout = timeout

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _unreachable(self, detail: str) -> TargetUnreachable:
        return TargetUnreachable(
            UNREACHABLE_FUNCTION,
            detail=f"rotation function {self._function.arn} at {self._function.endpoint}: {detail}",
        )

    async def _connect(self) -> rotation_pb2_grpc.RotationFunctionServiceStub:
        if self._stub is not None:
            return self._stub
        try:
            host, port = split_endpoint(self._function.endpoint)
            address = await self._targets.address(host, port)
        except ValueError:
            raise self._unreachable("the endpoint is not host:port") from None
        except TargetRefused as exc:
            raise self._unreachable(f"refused by the rotation target policy: {exc.message}") from None
        server_name = self._function.server_name if self._function.HasField("server_name") else ""
        options = [
            ("grpc.ssl_target_name_override", server_name or host),
            ("grpc.default_authority", server_name or host),
        ]
        target = f"ipv6:[{address}]:{port}" if ":" in address else f"ipv4:{address}:{port}"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._ca, private_key=self._client_key, certificate_chain=self._client_cert
        )
        self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._stub = rotation_pb2_grpc.RotationFunctionServiceStub(self._channel)
        return self._stub

    async def _rotate(self, ctx: StepContext, step: str) -> None:
        stub = await self._connect()
        try:
            await stub.Rotate(
                rotation_pb2.RotateRequest(
                    secret_id=ctx.secret_arn, client_request_token=ctx.token, step=step
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            said = f"{exc.code().name}: {exc.details() or ''}"
            if exc.code() in _TRANSPORT_CODES:
                raise self._unreachable(said) from None
            raise RotationStepError(
                f"Rotation function {self._function.arn} failed at {step}: {said}"
            ) from None

    async def create_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, CREATE_SECRET)

    async def set_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, SET_SECRET)

    async def test_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, TEST_SECRET)

    async def finish_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, FINISH_SECRET)
