"""The rotation service's role (``coffer-rotation``) cannot read a secret outside what it rotates: a secret
without rotation configured is denied to it (AWS's message, naming the assumed role); RotateSecret
configuring rotation (``RotateImmediately=false``) opens it; a master secret of alternating-users rotation
is readable only once the operator grants it, and only for reading."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.core import errors
from coffer.testing.wait import eventually
from tests.integration.rotation_db.conftest import ROTATION_ROLE, grant_master, master_policy_name

if TYPE_CHECKING:
    from tests.integration.rotation_db.conftest import Coffer

pytestmark = pytest.mark.integration

ROLE_SESSION = f"arn:aws:sts::000000000000:assumed-role/{ROTATION_ROLE}/"


def denial(action: str, arn: str) -> str:
    return (
        f"is not authorized to perform: secretsmanager:{action} on resource: {arn} "
        f"because no identity-based policy allows the secretsmanager:{action} action"
    )


async def test_the_rotation_role_reads_only_what_it_rotates_and_granted_masters(coffer: Coffer) -> None:
    role = coffer.api.client
    doc = {"engine": "postgres", "host": "127.0.0.1", "username": "app", "password": "app-pw"}
    created = await coffer.admin.create_secret(
        name=f"db/{uuid.uuid4().hex[:10]}", secret_string=json.dumps(doc)
    )
    arn = created.arn

    # No rotation configured: the role may neither read nor write it.
    with pytest.raises(errors.AccessDenied) as denied:
        await role.get_secret_value(secret_id=arn)
    message = denied.value.message
    assert message.startswith(f"User: {ROLE_SESSION}"), message
    assert denial("GetSecretValue", arn) in message
    with pytest.raises(errors.AccessDenied):
        await role.describe_secret(secret_id=arn)
    with pytest.raises(errors.AccessDenied):
        await role.put_secret_value(secret_id=arn, secret_string="x", version_stages=["AWSPENDING"])

    # The owner configures rotation without rotating now: the value stays, and the role may read it.
    reply = await coffer.admin.call(
        "RotateSecret",
        secret_id=arn,
        rotation_lambda_arn="postgresql-single-user",
        rotation_rules={"automatically_after_days": 30},
        rotate_immediately=False,
    )
    assert isinstance(reply, sm.RotateSecretResponse)
    described = await coffer.admin.describe_secret(secret_id=arn)
    assert described.rotation_enabled and described.rotation_lambda_arn == "postgresql-single-user"
    read = await role.get_secret_value(secret_id=arn)
    assert json.loads(read.secret_string) == doc and read.version_id == created.version_id
    # Ending the configuration test (nothing runs it here) keeps the rotator, so the role keeps access.
    await coffer.admin.call("CancelRotateSecret", secret_id=arn)
    assert (await role.get_secret_value(secret_id=arn)).version_id == created.version_id

    # A master secret: not rotated itself, so denied until the operator grants it to the role.
    master = await coffer.admin.create_secret(
        name=f"db/master-{uuid.uuid4().hex[:10]}",
        secret_string=json.dumps({**doc, "username": "postgres", "password": "master-pw"}),
    )
    with pytest.raises(errors.AccessDenied) as denied:
        await role.get_secret_value(secret_id=master.arn)
    assert denied.value.message.startswith(f"User: {ROLE_SESSION}")
    assert denial("GetSecretValue", master.arn) in denied.value.message
    await grant_master(coffer, master.arn)
    read = await role.get_secret_value(secret_id=master.arn)
    assert json.loads(read.secret_string)["password"] == "master-pw"
    assert (await role.describe_secret(secret_id=master.arn)).arn == master.arn
    # The grant is for reading that master only.
    with pytest.raises(errors.AccessDenied) as denied:
        await role.put_secret_value(secret_id=master.arn, secret_string="x", version_stages=["AWSPENDING"])
    assert denial("PutSecretValue", master.arn) in denied.value.message
    other = await coffer.admin.create_secret(name=f"db/other-{uuid.uuid4().hex[:10]}", secret_string="o")
    with pytest.raises(errors.AccessDenied):
        await role.get_secret_value(secret_id=other.arn)

    # Withdrawing the grant withdraws the read.
    await coffer.admin.iam.delete_role_policy(
        role_name=ROTATION_ROLE, policy_name=master_policy_name(master.arn)
    )

    async def master_denied() -> bool:
        try:
            await role.get_secret_value(secret_id=master.arn)
        except errors.AccessDenied:
            return True
        return False

    assert await eventually(master_denied, timeout=30, message="the withdrawn grant to take effect")
