"""The example custom rotation function (``examples/rotation_function``) against the real public API: its gRPC
server over mutual TLS (its own certificate from its own CA; callers need a certificate from the deployment's
CA), called step by step as the rotation worker calls it — with the rotation service's certificate — rotates
an API key in its JSON "target" and moves the labels; every step is idempotent for its token; a key the
target refuses fails testSecret without touching AWSCURRENT. Any other caller is refused."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from coffer.api.rotation.v1 import rotation_pb2, rotation_pb2_grpc
from coffer.pki import ensure_pki

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "rotation_function" / "api_key_function.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coffer_example_api_key_function", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def caller_credentials(fn_pki: Path, pki_dir: Path | None, identity: str) -> grpc.ChannelCredentials:
    """TLS to the function (trusting its CA), presenting ``identity``'s certificate from ``pki_dir`` (None:
    no client certificate)."""
    if pki_dir is None:
        return grpc.ssl_channel_credentials(root_certificates=(fn_pki / "ca.crt").read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=(fn_pki / "ca.crt").read_bytes(),
        private_key=(pki_dir / f"{identity}.key").read_bytes(),
        certificate_chain=(pki_dir / f"{identity}.crt").read_bytes(),
    )


async def test_example_function_rotates_an_api_key_step_by_step(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    example = load_example()
    fn_pki = tmp_path / "fn-pki"
    ensure_pki(fn_pki, identities=["api-key-function"])
    target = example.KeyFileTarget(tmp_path / "keys.json")
    created = await stack.client.create_secret(
        name=f"svc/api-key-{uuid.uuid4().hex[:6]}", secret_string="k-old"
    )
    target.add("k-old")
    function = example.ApiKeyRotationFunction(stack.client, target)
    server, port = await example.serve(
        function,
        bind="127.0.0.1:0",
        cert_pem=(fn_pki / "api-key-function.crt").read_bytes(),
        key_pem=(fn_pki / "api-key-function.key").read_bytes(),
        caller_ca_pem=stack.ca_file.read_bytes(),
    )
    creds = caller_credentials(fn_pki, stack.services.pki_dir, "rotation")
    token = str(uuid.uuid4())
    try:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "api-key-function")]
        ) as channel:
            stub = rotation_pb2_grpc.RotationFunctionServiceStub(channel)

            async def rotate(step: str) -> None:
                await stub.Rotate(
                    rotation_pb2.RotateRequest(secret_id=created.arn, client_request_token=token, step=step),
                    timeout=10,
                )

            # Not (yet) a pending version of this secret: the function refuses, like AWS's templates.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await rotate("createSecret")
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "AWSPENDING" in (refused.value.details() or "")

            # The token as AWSPENDING (a value put here stands in for RotateSecret's placeholder; the
            # generating path runs end to end in test_rotation_end_to_end.py).
            await stack.client.put_secret_value(
                secret_id=created.arn,
                client_request_token=token,
                secret_string="k-new-placeholder",
                version_stages=["AWSPENDING"],
            )
            await rotate("createSecret")
            await rotate("createSecret")  # idempotent: the pending value is kept
            pending = await stack.client.get_secret_value(
                secret_id=created.arn, version_id=token, version_stage="AWSPENDING"
            )
            assert pending.secret_string == "k-new-placeholder"

            # testSecret before setSecret: the target does not know the key yet
            with pytest.raises(grpc.aio.AioRpcError) as untested:
                await rotate("testSecret")
            assert "does not accept" in (untested.value.details() or "")
            current = await stack.client.get_secret_value(secret_id=created.arn)
            assert current.secret_string == "k-old"

            for step in ("setSecret", "setSecret", "testSecret", "finishSecret", "finishSecret"):
                await rotate(step)
            assert target.keys() == ["k-old", "k-new-placeholder"]
            current = await stack.client.get_secret_value(secret_id=created.arn)
            previous = await stack.client.get_secret_value(secret_id=created.arn, version_stage="AWSPREVIOUS")
            assert (current.version_id, current.secret_string) == (token, "k-new-placeholder")
            assert previous.secret_string == "k-old"
    finally:
        await server.stop(0.5)


async def test_example_function_refuses_every_caller_but_the_rotation_service(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Attack: anyone who can reach the function asks it to rotate a secret. Without a client certificate,
    or with one from another CA, the TLS handshake fails; with another identity of the deployment (the
    gateway's, the operator's) the function answers PERMISSION_DENIED; only ``rotation`` gets through."""
    example = load_example()
    fn_pki = tmp_path / "fn-pki"
    ensure_pki(fn_pki, identities=["api-key-function", "intruder"])
    created = await stack.client.create_secret(name=f"svc/api-key-{uuid.uuid4().hex[:6]}", secret_string="k")
    target = example.KeyFileTarget(tmp_path / "keys.json")
    server, port = await example.serve(
        example.ApiKeyRotationFunction(stack.client, target),
        bind="127.0.0.1:0",
        cert_pem=(fn_pki / "api-key-function.crt").read_bytes(),
        key_pem=(fn_pki / "api-key-function.key").read_bytes(),
        caller_ca_pem=stack.ca_file.read_bytes(),
    )
    pki_dir = stack.services.pki_dir

    async def call(creds: grpc.ChannelCredentials) -> grpc.StatusCode:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "api-key-function")]
        ) as channel:
            stub = rotation_pb2_grpc.RotationFunctionServiceStub(channel)
            try:
                await stub.Rotate(
                    rotation_pb2.RotateRequest(
                        secret_id=created.arn, client_request_token=str(uuid.uuid4()), step="createSecret"
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    try:
        assert await call(caller_credentials(fn_pki, None, "")) == grpc.StatusCode.UNAVAILABLE
        assert await call(caller_credentials(fn_pki, fn_pki, "intruder")) == grpc.StatusCode.UNAVAILABLE
        for other in ("gateway", "operator"):
            if (pki_dir / f"{other}.crt").exists():
                assert (
                    await call(caller_credentials(fn_pki, pki_dir, other))
                    == grpc.StatusCode.PERMISSION_DENIED
                )
        # the rotation service gets through to the function's own checks (not a pending version: refused)
        assert (
            await call(caller_credentials(fn_pki, pki_dir, "rotation")) == grpc.StatusCode.FAILED_PRECONDITION
        )
        assert target.keys() == []
    finally:
        await server.stop(0.2)
