"""An example custom rotation function for Coffer: rotates an API key that a small service accepts.

The "target system" is a JSON file listing the API keys a (pretend) service accepts:
``{"keys": ["k1", "k2"]}``. The secret's value is the key itself. Each step follows AWS's rotation-Lambda
template and is idempotent for its token:

- createSecret: if the token's AWSPENDING version already has a value, do nothing; else ask Coffer for a
  random key (GetRandomPassword) and PutSecretValue(token, ["AWSPENDING"]).
- setSecret: add the pending key to the file (no-op when it is there already).
- testSecret: check the target accepts the pending key.
- finishSecret: move AWSCURRENT to the token (no-op when it is there already) and drop keys the target no
  longer needs (anything that is neither the new current key nor the previous one).

Who may call it: only Coffer's rotation service. The server demands a client certificate issued by the
deployment's CA (``--caller-ca``, the ``ca.crt`` of Coffer's PKI) and refuses every caller whose certificate
is not the rotation service's (common name ``rotation``) with PERMISSION_DENIED, so that nobody else can make
it rotate a key.

Run it (a mutual-TLS gRPC server; an operator registers it with ``RegisterRotationFunction`` and passes the
returned ARN to ``RotateSecret`` as ``RotationLambdaARN``; the endpoint must be allowed by the deployment's
COFFER_ROTATION_ALLOWED_TARGETS, which ``make run`` does for 127.0.0.1:7600):

    COFFER_ENDPOINT=127.0.0.1:7443 COFFER_CA_FILE=.coffer/pki/ca.crt \\
    COFFER_ACCESS_KEY_ID=AKIA... COFFER_SECRET_ACCESS_KEY=... \\
    python examples/rotation_function/api_key_function.py --bind 127.0.0.1:7600 \\
        --cert fn.crt --key fn.key --caller-ca .coffer/pki/ca.crt --target-file keys.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from coffer.api.rotation.v1 import rotation_pb2, rotation_pb2_grpc
from coffer.client.aio import AsyncCofferClient
from coffer.core import errors

PENDING, CURRENT, PREVIOUS = "AWSPENDING", "AWSCURRENT", "AWSPREVIOUS"
KEY_LENGTH = 40
#: The common name of the only certificate allowed to call: Coffer's rotation service.
CALLER = "rotation"

StepHook = Callable[[str, str], Awaitable[None]]


class KeyFileTarget:
    """The API keys a service accepts, kept in a JSON file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self) -> list[str]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        return [str(k) for k in doc.get("keys", [])]

    def _write(self, keys: list[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"keys": keys}, fh)
        os.replace(tmp, self.path)

    def accepts(self, key: str) -> bool:
        return key in self.keys()

    def add(self, key: str) -> None:
        keys = self.keys()
        if key not in keys:
            self._write([*keys, key])

    def keep_only(self, keep: set[str]) -> None:
        self._write([k for k in self.keys() if k in keep])


class ApiKeyRotationFunction(rotation_pb2_grpc.RotationFunctionServiceServicer):
    """The RotationFunctionService. ``before_step(step, token)`` is awaited before each step runs (tests use
    it to hold a step while they crash the worker)."""

    def __init__(
        self, client: AsyncCofferClient, target: KeyFileTarget, *, before_step: StepHook | None = None
    ) -> None:
        self._client = client
        self._target = target
        self._before_step = before_step

    async def Rotate(
        self, request: rotation_pb2.RotateRequest, context: grpc.aio.ServicerContext
    ) -> rotation_pb2.RotateResponse:
        step, arn, token = request.step, request.secret_id, request.client_request_token
        names = context.auth_context().get("x509_common_name", [])
        if names != [CALLER.encode()]:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"only Coffer's rotation service ({CALLER}) may call"
            )
        try:
            if self._before_step is not None:
                await self._before_step(step, token)
            if step == "createSecret":
                await self.create_secret(arn, token)
            elif step == "setSecret":
                await self.set_secret(arn, token)
            elif step == "testSecret":
                await self.test_secret(arn, token)
            elif step == "finishSecret":
                await self.finish_secret(arn, token)
            else:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Unknown step {step!r}")
        except errors.CofferError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc.code}: {exc}")
        except StepFailed as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return rotation_pb2.RotateResponse()

    async def _stages(self, arn: str) -> dict[str, list[str]]:
        reply = await self._client.describe_secret(secret_id=arn)
        return {vid: list(s.stages) for vid, s in reply.version_ids_to_stages.items()}

    async def _pending_key(self, arn: str, token: str) -> str | None:
        try:
            reply = await self._client.get_secret_value(
                secret_id=arn, version_id=token, version_stage=PENDING
            )
        except errors.NotFound:
            return None
        return reply.secret_string

    async def create_secret(self, arn: str, token: str) -> None:
        stages = await self._stages(arn)
        if PENDING not in stages.get(token, []) and CURRENT not in stages.get(token, []):
            raise StepFailed(f"Version {token} is not set as AWSPENDING for rotation of {arn}.")
        await self._client.get_secret_value(secret_id=arn, version_stage=CURRENT)  # must exist
        if await self._pending_key(arn, token) is not None:
            return
        new_key = (
            await self._client.get_random_password(password_length=KEY_LENGTH, exclude_punctuation=True)
        ).random_password
        await self._client.put_secret_value(
            secret_id=arn, client_request_token=token, secret_string=new_key, version_stages=[PENDING]
        )

    async def set_secret(self, arn: str, token: str) -> None:
        key = await self._pending_key(arn, token)
        if key is None:
            raise StepFailed(f"Version {token} of {arn} has no pending key.")
        self._target.add(key)

    async def test_secret(self, arn: str, token: str) -> None:
        key = await self._pending_key(arn, token)
        if key is None or not self._target.accepts(key):
            raise StepFailed(f"The target does not accept the pending key of {arn}.")

    async def finish_secret(self, arn: str, token: str) -> None:
        stages = await self._stages(arn)
        current = next((vid for vid, labels in stages.items() if CURRENT in labels), None)
        if current != token:
            await self._client.update_secret_version_stage(
                secret_id=arn,
                version_stage=CURRENT,
                move_to_version_id=token,
                **({"remove_from_version_id": current} if current else {}),
            )
        keep = set()
        for stage in (CURRENT, PREVIOUS):
            with contextlib.suppress(errors.NotFound):
                value = await self._client.get_secret_value(secret_id=arn, version_stage=stage)
                keep.add(value.secret_string)
        self._target.keep_only(keep)


class StepFailed(Exception):
    pass


async def serve(
    function: ApiKeyRotationFunction, *, bind: str, cert_pem: bytes, key_pem: bytes, caller_ca_pem: bytes
) -> tuple[grpc.aio.Server, int]:
    """Serve ``function`` on ``bind`` over mutual TLS: callers need a certificate from ``caller_ca_pem``."""
    server = grpc.aio.server()
    rotation_pb2_grpc.add_RotationFunctionServiceServicer_to_server(function, server)
    credentials = grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=caller_ca_pem, require_client_auth=True
    )
    port = server.add_secure_port(bind, credentials)
    await server.start()
    return server, port


async def _main(args: argparse.Namespace, cert_pem: bytes, key_pem: bytes, caller_ca_pem: bytes) -> None:
    async with AsyncCofferClient.from_env() as client:
        function = ApiKeyRotationFunction(client, KeyFileTarget(Path(args.target_file)))
        server, port = await serve(
            function,
            bind=args.bind,
            cert_pem=cert_pem,
            key_pem=key_pem,
            caller_ca_pem=caller_ca_pem,
        )
        print(f"rotation function listening on port {port}", flush=True)
        await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:7600")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--caller-ca", required=True, help="the CA of Coffer's PKI (its ca.crt)")
    parser.add_argument("--target-file", required=True)
    args = parser.parse_args()
    asyncio.run(
        _main(
            args,
            Path(args.cert).read_bytes(),
            Path(args.key).read_bytes(),
            Path(args.caller_ca).read_bytes(),
        )
    )


if __name__ == "__main__":
    main()
