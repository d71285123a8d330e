"""Against the real gateway: an expired credential is refused (ExpiredTokenException, a clear message); after
``rotate-credential`` the old token is refused and the new one works."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from typing import Any

import pytest

from coffer.cli.main import main
from coffer.client import AsyncCofferClient
from coffer.core import errors
from coffer.credentials import create_credential
from coffer.testing.wait import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_an_expired_credential_is_refused(lone_gateway: Any) -> None:
    path = lone_gateway.settings.credentials_file
    expired = create_credential(
        path, principal="user/old", expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    lone_gateway.runtime.credentials.refresh(force=True)
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, expired) as client:
        with pytest.raises(errors.Unauthenticated) as info:
            await client.get_random_password()
    assert info.value.code == "ExpiredTokenException"
    assert info.value.message.startswith("The security token included in the request is expired.")


async def test_a_rotated_credential_stops_working_and_its_replacement_works(lone_gateway: Any) -> None:
    path = lone_gateway.settings.credentials_file
    old = create_credential(path, principal="user/rotated")
    lone_gateway.runtime.credentials.refresh(force=True)
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, old) as client:
        await client.get_random_password()

    out, err = io.StringIO(), io.StringIO()
    argv = ["admin", "rotate-credential", "--principal", "user/rotated", "--credentials-file", str(path)]
    assert await asyncio.to_thread(main, argv, stdout=out, stderr=err) == 0, err.getvalue()
    new = out.getvalue().strip()

    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, new) as client:
        await eventually(
            client.get_random_password,
            until=lambda _reply: True,
            timeout=5,
            interval=0.2,
            retry_on=(errors.Unauthenticated,),
            message="the rotated credential to be accepted",
        )
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, old) as client:
        with pytest.raises(errors.Unauthenticated) as info:
            await client.get_random_password()
    assert info.value.code == "UnrecognizedClientException"
    # The admin's own credential is untouched.
    async with AsyncCofferClient(lone_gateway.endpoint, lone_gateway.ca_file, lone_gateway.token) as client:
        await client.get_random_password()
