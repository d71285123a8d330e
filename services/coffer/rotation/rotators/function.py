"""Custom rotation functions: a gRPC ``coffer.api.rotation.v1.RotationFunctionService`` the user runs and
registers (RegisterRotationFunction). The worker looks the function up by ARN through the public
ListRotationFunctions and calls ``Rotate`` once per step over TLS, trusting the CA registered with the
function (or the deployment's own CA)."""

from __future__ import annotations

import grpc

from coffer.api.rotation.v1 import rotation_pb2, rotation_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.rotation.rotators.base import (
    CREATE_SECRET,
    FINISH_SECRET,
    SET_SECRET,
    TEST_SECRET,
    RotationStepError,
    StepContext,
)

STEP_TIMEOUT_SECONDS = 300.0


class FunctionRotator:
    """Calls one registered rotation function. ``close()`` releases its channel."""

    def __init__(
        self, function: sm.RotationFunction, *, default_ca_pem: bytes, timeout: float = STEP_TIMEOUT_SECONDS
    ) -> None:
        self.name = function.arn
        self._function = function
        ca = function.ca_pem.encode("utf-8") if function.ca_pem else default_ca_pem
        options: list[tuple[str, str]] = []
        if function.HasField("server_name") and function.server_name:
            options = [
                ("grpc.ssl_target_name_override", function.server_name),
                ("grpc.default_authority", function.server_name),
            ]
        self._channel = grpc.aio.secure_channel(
            function.endpoint, grpc.ssl_channel_credentials(root_certificates=ca), options=options
        )
        self._stub = rotation_pb2_grpc.RotationFunctionServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def _rotate(self, ctx: StepContext, step: str) -> None:
        try:
            await self._stub.Rotate(
                rotation_pb2.RotateRequest(
                    secret_id=ctx.secret_arn, client_request_token=ctx.token, step=step
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise RotationStepError(
                f"Rotation function {self._function.arn} ({self._function.endpoint}) failed at {step}: "
                f"{exc.code().name}: {exc.details() or ''}"
            ) from None

    async def create_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, CREATE_SECRET)

    async def set_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, SET_SECRET)

    async def test_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, TEST_SECRET)

    async def finish_secret(self, ctx: StepContext) -> None:
        await self._rotate(ctx, FINISH_SECRET)
