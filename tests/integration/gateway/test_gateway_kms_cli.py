"""The public KMS API through the gateway (real kms service, real PostgreSQL), driven by the `coffer kms`
command in-process, plus `coffer status` against a profile naming the gateway and the kms service."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
from typing import Any

import pytest

from coffer.cli.main import main
from coffer.client import AsyncCofferClient
from coffer.core import errors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def cli(gw: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    full = [*argv, "--profile", str(gw.profile)]
    code = await asyncio.to_thread(main, full, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_kms_create_describe_disable_enable_via_cli(kms_stack: Any) -> None:
    code, out, err = await cli(
        kms_stack, "kms", "create-key", "--description", "payments", "--tags", "TagKey=team,TagValue=pay"
    )
    assert code == 0, err
    meta = json.loads(out)["KeyMetadata"]
    key_id = meta["KeyId"]
    assert meta["Arn"].endswith(f":key/{key_id}") and meta["Arn"].startswith("arn:aws:kms:local-1:")
    assert meta["AWSAccountId"] == "000000000000"
    assert meta["Enabled"] is True and meta["KeyState"] == "Enabled"
    assert meta["Description"] == "payments" and meta["KeyManager"] == "CUSTOMER"
    assert dt.datetime.fromisoformat(meta["CreationDate"]).tzinfo is not None  # ISO 8601, as the AWS CLI
    assert "DeletionDate" not in meta

    code, out, err = await cli(kms_stack, "kms", "disable-key", "--key-id", key_id)
    assert (code, out) == (0, ""), err
    code, out, err = await cli(kms_stack, "kms", "describe-key", "--key-id", meta["Arn"])
    assert code == 0, err
    disabled = json.loads(out)["KeyMetadata"]
    assert disabled["KeyId"] == key_id and disabled["Enabled"] is False and disabled["KeyState"] == "Disabled"

    # A disabled key refuses crypto: the AWS KMS error name comes through the gateway.
    plaintext = base64.b64encode(b"hello").decode()
    code, out, err = await cli(kms_stack, "kms", "encrypt", "--key-id", key_id, "--plaintext", plaintext)
    assert code == 254 and out == ""
    assert err.startswith("An error occurred (DisabledException) when calling the Encrypt operation: ")

    code, _, err = await cli(kms_stack, "kms", "enable-key", "--key-id", key_id)
    assert code == 0, err
    code, out, err = await cli(
        kms_stack,
        "kms",
        "encrypt",
        "--key-id",
        key_id,
        "--plaintext",
        plaintext,
        "--encryption-context",
        "a=b",
    )
    assert code == 0, err
    blob = json.loads(out)["CiphertextBlob"]
    code, out, err = await cli(
        kms_stack, "kms", "decrypt", "--ciphertext-blob", blob, "--encryption-context", "a=b"
    )
    assert code == 0, err
    decrypted = json.loads(out)
    assert base64.b64decode(decrypted["Plaintext"]) == b"hello" and decrypted["KeyId"] == meta["Arn"]

    code, out, err = await cli(kms_stack, "kms", "list-keys")
    assert code == 0, err
    listing = json.loads(out)
    assert {"KeyId": key_id, "KeyArn": meta["Arn"]} in listing["Keys"] and listing["Truncated"] is False


async def test_kms_errors_through_the_gateway(kms_stack: Any) -> None:
    code, out, err = await cli(kms_stack, "kms", "describe-key", "--key-id", "fake-key-id")
    assert code == 254 and out == ""
    assert err.strip() == (
        "An error occurred (NotFoundException) when calling the DescribeKey operation: "
        "Invalid keyId 'fake-key-id'"
    )
    async with AsyncCofferClient(kms_stack.endpoint, kms_stack.ca_file, kms_stack.credentials) as client:
        # The AWS-managed default key refuses crypto calls from the gateway.
        with pytest.raises(errors.AccessDenied):
            await client.kms.encrypt(key_id="alias/aws/secretsmanager", plaintext=b"x")


async def test_status_reports_every_service_and_names_the_one_that_is_down(kms_stack: Any) -> None:
    code, out, err = await cli(kms_stack, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["gateway", "store", "kms"]
    assert all(line.split()[2] == "SERVING" for line in lines)

    # The profile's kms entry now points at a port where nothing listens.
    profile = json.loads(kms_stack.profile.read_text())
    profile["services"]["kms"] = "127.0.0.1:1"
    kms_stack.profile.write_text(json.dumps(profile))
    code, out, err = await cli(kms_stack, "status", "--timeout", "2")
    assert code == 1
    assert "kms" in err and "gateway" not in err
    assert "UNREACHABLE" in out
