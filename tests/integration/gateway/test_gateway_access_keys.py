"""Access keys against the real gateway, store and kms: a signed call works; a wrong timestamp, an expired or
token-less session are refused with the AWS error names; a deleted or deactivated key is refused by a gateway
that had just served it within a second (the store's change stream); environment credentials win over the
profile's; the store sees the caller as the resolved IAM principal (ARN, account, access key, policies)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.client import AsyncCofferClient
from coffer.client.credentials import Credentials
from coffer.core import errors
from coffer.core.principal import PrincipalKind
from coffer.rpc import context as ctx
from coffer.rpc.tls import GATEWAY_HOST, name_options
from coffer.testing.stack import insert_session
from coffer.testing.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GET_RANDOM = "/coffer.api.secrets.v1.SecretsManagerService/GetRandomPassword"
ADMIN_ARN = "arn:aws:iam::000000000000:user/admin"


def _raw_channel(gw: Any) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=gw.ca_file.read_bytes())
    return grpc.aio.secure_channel(gw.endpoint, creds, options=name_options(GATEWAY_HOST))


async def _admin_sql(gw: Any) -> asyncpg.Connection:
    return await asyncpg.connect(gw.services.env["COFFER_DATABASE_URL"])


async def _refused_code(gw: Any, creds: Credentials) -> str | None:
    """The error code a call with ``creds`` gets now (None: it was served)."""
    async with AsyncCofferClient(gw.endpoint, gw.ca_file, creds) as client:
        try:
            await client.get_random_password()
        except errors.Unauthenticated as exc:
            return exc.code
    return None


async def test_a_timestamp_five_minutes_off_is_refused(stack: Any) -> None:
    request = sm.GetRandomPasswordRequest()
    async with _raw_channel(stack) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        ok = stack.auth(GET_RANDOM, request, clock=lambda: time.time() - 200)
        assert (await stub.GetRandomPassword(request, metadata=ok, timeout=10)).random_password
        for skew in (-400, 400):
            late = stack.auth(GET_RANDOM, request, clock=lambda skew=skew: time.time() + skew)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetRandomPassword(request, metadata=late, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert (info.value.details() or "").startswith("Signature expired")
        # a signature over another request does not verify this one
        other = stack.auth(GET_RANDOM, sm.GetRandomPasswordRequest(password_length=20))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetRandomPassword(request, metadata=other, timeout=10)
        assert (info.value.details() or "").startswith("The request signature we calculated does not match")


async def test_sessions_need_their_token_and_expire(stack: Any) -> None:
    conn = await _admin_sql(stack)
    try:
        live = await insert_session(conn, "coffer-rotation", "s1", lifetime=dt.timedelta(hours=1))
        expired = await insert_session(conn, "coffer-rotation", "s2", lifetime=dt.timedelta(seconds=-1))
    finally:
        await conn.close()
    assert await _refused_code(stack, live) is None
    assert await _refused_code(stack, Credentials(live.access_key_id, live.secret_access_key)) == (
        "InvalidClientTokenId"
    )
    assert await _refused_code(stack, Credentials(live.access_key_id, live.secret_access_key, "nope")) == (
        "InvalidClientTokenId"
    )
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, expired) as client:
        with pytest.raises(errors.Unauthenticated) as info:
            await client.get_random_password()
    assert info.value.code == "ExpiredTokenException"
    assert info.value.message == "The security token included in the request is expired"


async def test_a_deleted_key_is_refused_within_a_second_by_a_gateway_that_just_served_it(stack: Any) -> None:
    creds = await stack.services.credential("user/leaving")
    assert await _refused_code(stack, creds) is None  # served, and now cached by the gateway
    conn = await _admin_sql(stack)
    try:
        async with conn.transaction():
            await conn.execute(
                "DELETE FROM store.iam_access_keys WHERE access_key_id = $1", creds.access_key_id
            )
            await conn.execute(
                "SELECT pg_notify('coffer_iam', $1)", json.dumps({"access_key_ids": [creds.access_key_id]})
            )
    finally:
        await conn.close()
    code = await eventually(
        lambda: _refused_code(stack, creds),
        until=lambda code: code is not None,
        timeout=1.0,
        interval=0.05,
        message="the deleted access key to be refused",
    )
    assert code == "UnrecognizedClientException"
    assert await _refused_code(stack, stack.credentials) is None  # the admin's key still works


async def test_a_deactivated_key_is_refused_and_a_reactivated_one_works(stack: Any) -> None:
    creds = await stack.services.credential("user/paused")
    assert await _refused_code(stack, creds) is None

    async def set_status(status: str) -> None:
        conn = await _admin_sql(stack)
        try:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE store.iam_access_keys SET status = $2 WHERE access_key_id = $1",
                    creds.access_key_id,
                    status,
                )
                await conn.execute(
                    "SELECT pg_notify('coffer_iam', $1)",
                    json.dumps({"access_key_ids": [creds.access_key_id]}),
                )
        finally:
            await conn.close()

    await set_status("Inactive")
    code = await eventually(
        lambda: _refused_code(stack, creds), until=lambda c: c is not None, timeout=1.0, message="refused"
    )
    assert code == "InvalidClientTokenId"
    await set_status("Active")
    await eventually(
        lambda: _refused_code(stack, creds), until=lambda c: c is None, timeout=1.0, message="served"
    )


async def test_environment_credentials_win_over_the_profile(stack: Any, tmp_path: Path) -> None:
    other = await stack.services.credential("user/envuser")
    env = {"COFFER_PROFILE": str(stack.profile)}
    async with AsyncCofferClient.from_env(env) as client:
        assert client._credentials is not None
        assert client._credentials().access_key_id == stack.credentials.access_key_id
        await client.get_random_password()
    env.update(
        {"COFFER_ACCESS_KEY_ID": other.access_key_id, "COFFER_SECRET_ACCESS_KEY": other.secret_access_key}
    )
    async with AsyncCofferClient.from_env(env) as client:
        assert client._credentials().access_key_id == other.access_key_id  # type: ignore[misc]
        await client.get_random_password()
    env["COFFER_SECRET_ACCESS_KEY"] = "wrong"
    async with AsyncCofferClient.from_env(env) as client:
        with pytest.raises(errors.Unauthenticated) as info:
            await client.get_random_password()
    assert info.value.code == "InvalidSignatureException"


async def test_the_store_sees_the_resolved_principal(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    app = stack.services.store.app
    describe = app.describe_secret

    async def spy(**kw: Any) -> Any:
        seen.append((ctx.current_caller(), ctx.current_source_ip(), ctx.current_user_agent()))
        return await describe(**kw)

    monkeypatch.setattr(app, "describe_secret", spy)
    user = await stack.services.credential("user/reader")
    for creds in (stack.credentials, user):
        async with AsyncCofferClient(stack.endpoint, stack.ca_file, creds) as client:
            with pytest.raises(errors.NotFound):
                await client.describe_secret(secret_id="nothing")
    (admin, admin_ip, agent), (reader, _, _) = seen
    assert admin.arn == ADMIN_ARN and admin.account == "000000000000" and admin.kind is PrincipalKind.USER
    assert admin.access_key_id == stack.credentials.access_key_id and admin.unique_id.startswith("AIDA")
    assert [p.name for p in admin.policies] == ["AdministratorAccess"]
    assert (
        reader.arn == "arn:aws:iam::000000000000:user/reader" and reader.access_key_id == user.access_key_id
    )
    assert admin_ip == "127.0.0.1" and agent and "grpc" in agent


async def test_a_changed_policy_reaches_the_stores_cache(stack: Any) -> None:
    creds = await stack.services.credential("user/changing")
    directory = stack.services.store.iam
    before = await directory.principal(creds.access_key_id)
    assert before is not None and [p.name for p in before.policies] == ["Inline"]
    conn = await _admin_sql(stack)
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO store.iam_policies (principal_id, policy_name, document)
                   SELECT id, 'Second', $2 FROM store.iam_principals WHERE arn = $1""",
                before.arn,
                '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}',
            )
            await conn.execute(
                "SELECT pg_notify('coffer_iam', $1)", json.dumps({"principal_arns": [before.arn]})
            )
    finally:
        await conn.close()

    async def names() -> list[str]:
        found = await directory.principal(creds.access_key_id)
        return [p.name for p in found.policies] if found is not None else []

    await eventually(names, until=lambda n: n == ["Inline", "Second"], timeout=1.0, message="the new policy")


async def test_the_kms_sees_the_resolved_principal(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    app = stack.services.kms.app
    for name in ("create_key", "generate_data_key"):
        original = getattr(app, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            seen[_name] = (ctx.current_caller(), ctx.current_peer())
            return _original(*args, **kw)

        monkeypatch.setattr(app, name, spy)
    reader = await stack.services.credential("user/keymaker")
    async with AsyncCofferClient(stack.endpoint, stack.ca_file, reader) as client:
        await client.kms.create_key(description="whose")  # forwarded by the gateway
        await client.create_secret(
            name="kms/whose", secret_string="v"
        )  # the store asks the kms for a data key
    (direct, direct_peer), (via_store, store_peer) = seen["create_key"], seen["generate_data_key"]
    assert (direct_peer, store_peer) == ("gateway", "store")
    for caller in (direct, via_store):
        assert caller.arn == "arn:aws:iam::000000000000:user/keymaker"
        assert caller.access_key_id == reader.access_key_id and [p.name for p in caller.policies] == [
            "Inline"
        ]
