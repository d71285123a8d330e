"""Resource policies over the wire: the legacy admin (the only wire principal until IAM access keys land)
through the real gateway → store → kms: SDK and `coffer secretsmanager *-resource-policy` commands, with
BlockPublicPolicy refusing `"Principal": "*"` and AWS's error names."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from coffer.cli.main import main
from coffer.client import AsyncCofferClient
from coffer.core import errors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ROLE = "arn:aws:iam::111111111111:role/reader"
GRANT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": ROLE},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            }
        ],
    }
)
PUBLIC = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:*", "Resource": "*"}],
    }
)


async def cli(gw: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, [*argv, "--profile", str(gw.profile)], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_sdk_put_get_validate_delete(stack: Any) -> None:
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.token) as client:
        created = await client.create_secret(name="rp/sdk", secret_string="v")
        put = await client.put_resource_policy(
            secret_id="rp/sdk", resource_policy=GRANT, block_public_policy=True
        )
        assert (put.arn, put.name) == (created.arn, "rp/sdk")
        got = await client.get_resource_policy(secret_id=created.arn)
        assert json.loads(got.resource_policy) == json.loads(GRANT)

        with pytest.raises(errors.InvalidParameter) as info:
            await client.put_resource_policy(
                secret_id="rp/sdk", resource_policy=PUBLIC, block_public_policy=True
            )
        assert info.value.code == "PublicPolicyException"
        with pytest.raises(errors.InvalidParameter) as info:
            await client.put_resource_policy(secret_id="rp/sdk", resource_policy="{not json")
        assert (info.value.code, info.value.message) == (
            "MalformedPolicyDocumentException",
            "This policy has invalid syntax.",
        )
        validated = await client.validate_resource_policy(resource_policy=PUBLIC)
        assert not validated.policy_validation_passed
        assert [e.check_name for e in validated.validation_errors] == ["BROAD_ACCESS"]
        assert (
            await client.validate_resource_policy(secret_id="rp/sdk", resource_policy=GRANT)
        ).policy_validation_passed

        deleted = await client.delete_resource_policy(secret_id="rp/sdk")
        assert deleted.arn == created.arn
        assert not (await client.get_resource_policy(secret_id="rp/sdk")).HasField("resource_policy")
        # the refused puts left nothing behind; a policy-less secret is still readable by its owner
        assert (await client.get_secret_value(secret_id="rp/sdk")).secret_string == "v"
        with pytest.raises(errors.NotFound):
            await client.get_resource_policy(secret_id="rp/missing")


async def test_cli_commands(stack: Any, tmp_path: Path) -> None:
    code, out, err = await cli(
        stack, "secretsmanager", "create-secret", "--name", "rp/cli", "--secret-string", "v"
    )
    assert code == 0, err
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(GRANT)
    code, out, err = await cli(
        stack, "secretsmanager", "put-resource-policy", "--secret-id", "rp/cli",
        "--resource-policy", f"file://{policy_file}", "--block-public-policy",
    )  # fmt: skip
    assert code == 0, err
    assert set(json.loads(out)) == {"ARN", "Name"}
    code, out, err = await cli(stack, "secretsmanager", "get-resource-policy", "--secret-id", "rp/cli")
    assert code == 0, err
    assert json.loads(json.loads(out)["ResourcePolicy"]) == json.loads(GRANT)

    code, out, err = await cli(
        stack, "secretsmanager", "put-resource-policy", "--secret-id", "rp/cli",
        "--resource-policy", PUBLIC, "--block-public-policy",
    )  # fmt: skip
    assert code == 254 and err.startswith(
        "An error occurred (PublicPolicyException) when calling the PutResourcePolicy operation: "
    )
    code, out, err = await cli(
        stack, "secretsmanager", "put-resource-policy", "--secret-id", "rp/cli",
        "--resource-policy", PUBLIC, "--no-block-public-policy",
    )  # fmt: skip
    assert code == 0, err

    code, out, err = await cli(
        stack, "secretsmanager", "validate-resource-policy", "--resource-policy", PUBLIC
    )
    assert code == 0, err
    assert json.loads(out)["PolicyValidationPassed"] is False

    code, out, err = await cli(stack, "secretsmanager", "delete-resource-policy", "--secret-id", "rp/cli")
    assert code == 0, err
    code, out, err = await cli(stack, "secretsmanager", "get-resource-policy", "--secret-id", "rp/cli")
    assert code == 0 and "ResourcePolicy" not in json.loads(out)


async def test_the_store_decides_wire_calls(stack: Any) -> None:
    """A resource policy's explicit deny refuses even the administrator, with AWS's message."""
    admin = "arn:aws:iam::000000000000:user/admin"
    deny = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": {"AWS": admin},
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": "*",
                }
            ],
        }
    )
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, stack.token) as client:
        created = await client.create_secret(name="rp/deny", secret_string="v")
        await client.put_resource_policy(secret_id="rp/deny", resource_policy=deny)
        with pytest.raises(errors.AccessDenied) as info:
            await client.get_secret_value(secret_id="rp/deny")
        assert info.value.code == "AccessDeniedException"
        assert info.value.message == (
            f"User: {admin} is not authorized to perform: secretsmanager:GetSecretValue on resource: "
            f"{created.arn} with an explicit deny in a resource-based policy"
        )
        assert (await client.describe_secret(secret_id="rp/deny")).arn == created.arn
        await client.delete_resource_policy(secret_id="rp/deny")
        assert (await client.get_secret_value(secret_id="rp/deny")).secret_string == "v"
