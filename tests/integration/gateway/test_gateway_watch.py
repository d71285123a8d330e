"""WatchSecrets (issue 14) over the wire: signed SDK clients → the real gateway → store (→ kms), on a real
PostgreSQL. The stream resumes with nothing missed and nothing twice across a reconnect in the middle of
concurrent writes, refuses a token older than what is kept, shows a caller only the secrets it may describe,
filters by secret id and name prefix, sends heartbeats while idle, and names deletions, restores, label moves
and rotations with their kinds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coffer.api.audit.v1 import audit_pb2
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client import AsyncCofferClient
from coffer.client.credentials import Credentials
from coffer.core import changes, errors
from coffer.store.repository import StoreRepository

from .conftest import Gateway, gateway_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FAST = {"COFFER_WATCH_HEARTBEAT_SECONDS": "0.3", "COFFER_WATCH_POLL_SECONDS": "0.5"}


@pytest.fixture
async def gw(tmp_path: Path, pki_dir: Path, database_url: str) -> AsyncIterator[Gateway]:
    async with gateway_stack(tmp_path, pki_dir, database_url, **FAST) as gateway:
        yield gateway


def client_of(gw: Gateway, credentials: Credentials | None = None) -> AsyncCofferClient:
    return AsyncCofferClient(gw.endpoint, gw.ca_file, credentials or gw.credentials)


async def next_change(events: AsyncIterator[sm.SecretChangeEvent]) -> sm.SecretChangeEvent:
    """The next event that is not a heartbeat."""
    async for event in events:
        if event.kind != changes.HEARTBEAT:
            return event
    raise AssertionError("the stream ended")


async def user_with(gw: Gateway, name: str, statements: list[dict[str, Any]]) -> Credentials:
    async with client_of(gw) as admin:
        await admin.iam.create_user(user_name=name)
        await admin.iam.put_user_policy(
            user_name=name,
            policy_name="p",
            policy_document=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )
        key = (await admin.iam.create_access_key(user_name=name)).access_key
    return Credentials(key.access_key_id, key.secret_access_key)


async def test_resume_in_the_middle_of_500_concurrent_changes_misses_nothing_and_repeats_nothing(
    gw: Gateway,
) -> None:
    names = [f"load/{i}" for i in range(10)]  # 51 versions each: under the cap of 100
    async with client_of(gw) as client:
        arns = {n: (await client.create_secret(name=n, secret_string="0")).arn for n in names}
        stream = client.watch_secrets(name_prefix="load/")
        opening = await anext(stream)
        assert opening.kind == changes.HEARTBEAT and opening.resume_token

        put: list[str] = []

        async def writer(w: int) -> None:
            for i in range(100):
                # Writers share secrets: changes of one secret from several writers interleave.
                out = await client.put_secret_value(secret_id=names[(w + i) % 10], secret_string=f"{w}-{i}")
                put.append(out.version_id)

        writers = asyncio.ensure_future(asyncio.gather(*(writer(w) for w in range(5))))
        seen: list[sm.SecretChangeEvent] = []
        async for event in stream:
            if event.kind != changes.HEARTBEAT:
                seen.append(event)
            if len(seen) == 200:
                token = event.resume_token
                break
        await stream.aclose()  # the consumer goes away (the call is cancelled) ...
        async for event in client.watch_secrets(name_prefix="load/", resume_token=token):  # ... and resumes
            if event.kind != changes.HEARTBEAT:
                seen.append(event)
            if len(seen) == 500:
                break
        await writers

    # Exactly the committed sequence: every version once, and per secret in the order of its change
    # sequence (the row lock's order, recorded in the outbox independently of the change stream).
    assert [e.kind for e in seen] == [changes.VERSION_CREATED] * 500
    assert sorted(e.version_id for e in seen) == sorted(put)
    # The stages a version had when its change committed (a PutSecretValue moves AWSCURRENT to it).
    assert all(list(e.version_stages) == ["AWSCURRENT"] for e in seen)
    assert gw.services is not None and gw.services.store is not None
    rows = await gw.services.store.pool.fetch(
        "SELECT secret_arn, version_id FROM store.outbox WHERE event = 'PutSecretValue'"
        " ORDER BY secret_arn, change_seq"
    )
    for name, arn in arns.items():
        committed = [r["version_id"] for r in rows if r["secret_arn"] == arn]
        streamed = [e.version_id for e in seen if e.arn == arn]
        assert streamed == committed, name
        assert {e.name for e in seen if e.arn == arn} == {name}
    positions = [changes.decode_token(e.resume_token)[1] for e in seen]
    assert positions == sorted(positions) and len(set(positions)) == 500


async def test_a_token_older_than_what_is_kept_is_refused_with_the_resync_message(gw: Gateway) -> None:
    async with client_of(gw) as client:
        await client.create_secret(name="old/a", secret_string="1")
        stream = client.watch_secrets()
        token = (await anext(stream)).resume_token
        await client.put_secret_value(secret_id="old/a", secret_string="2")
        assert (await next_change(stream)).kind == changes.VERSION_CREATED
        await stream.aclose()
        # The events still kept resume; then housekeeping trims them all.
        resumed = client.watch_secrets(resume_token=token)
        assert (await next_change(resumed)).name == "old/a"
        await resumed.aclose()
        await client.put_secret_value(secret_id="old/a", secret_string="3")
        assert gw.services is not None and gw.services.store is not None
        trim = await StoreRepository(gw.services.store.pool).trim_events(keep_seconds=0, max_rows=0)
        assert trim.deleted >= 3
        with pytest.raises(errors.InvalidRequest) as info:
            async for _ in client.watch_secrets(resume_token=token):
                pass
        assert info.value.code == "InvalidRequestException"
        assert "resync" in info.value.message and "without a resume token" in info.value.message
        with pytest.raises(errors.InvalidParameter):
            async for _ in client.watch_secrets(resume_token="not-a-token"):
                pass
        # Watching again without a token works.
        fresh = client.watch_secrets()
        assert (await anext(fresh)).kind == changes.HEARTBEAT
        await fresh.aclose()


async def test_a_caller_sees_only_the_secrets_it_may_describe(gw: Gateway) -> None:
    async with client_of(gw) as admin:
        visible = (await admin.create_secret(name="team/visible", secret_string="1")).arn
        await admin.create_secret(name="other/hidden", secret_string="1")
    watcher = await user_with(
        gw,
        "watcher",
        [
            {"Effect": "Allow", "Action": "secretsmanager:WatchSecrets", "Resource": "*"},
            {"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": f"{visible[:-7]}*"},
        ],
    )
    no_watch = await user_with(
        gw, "nowatch", [{"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": "*"}]
    )
    async with client_of(gw, watcher) as client, client_of(gw) as admin:
        stream = client.watch_secrets()
        await anext(stream)
        await admin.put_secret_value(secret_id="other/hidden", secret_string="2")
        await admin.tag_resource(secret_id="other/hidden", tags=[{"key": "k", "value": "v"}])
        await admin.put_secret_value(secret_id="team/visible", secret_string="2")
        event = await next_change(stream)  # the hidden secret's two changes came first: never shown
        assert (event.name, event.arn, event.kind) == ("team/visible", visible, changes.VERSION_CREATED)
        # A resource policy that denies DescribeSecret to the watcher hides the secret from then on.
        deny = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": {"AWS": "arn:aws:iam::000000000000:user/watcher"},
                    "Action": "secretsmanager:DescribeSecret",
                    "Resource": "*",
                }
            ],
        }
        await admin.put_resource_policy(secret_id="team/visible", resource_policy=json.dumps(deny))
        await admin.put_secret_value(secret_id="team/visible", secret_string="3")
        await admin.delete_resource_policy(secret_id="team/visible")
        await admin.put_secret_value(secret_id="team/visible", secret_string="4")
        shown = await next_change(stream)
        assert (shown.kind, shown.detail) == (changes.METADATA_CHANGED, "DeleteResourcePolicy")
        last = await next_change(stream)
        assert last.kind == changes.VERSION_CREATED
        value = await admin.get_secret_value(secret_id="team/visible")
        assert last.version_id == value.version_id
        await stream.aclose()
    async with client_of(gw, no_watch) as client:
        with pytest.raises(errors.AccessDenied):
            async for _ in client.watch_secrets():
                pass


async def test_filters_by_secret_id_and_name_prefix(gw: Gateway) -> None:
    async with client_of(gw) as client:
        a = (await client.create_secret(name="f/a", secret_string="1")).arn
        await client.create_secret(name="f/b", secret_string="1")
        await client.create_secret(name="g/c", secret_string="1")
        by_id = client.watch_secrets(secret_ids=["f/b", a])
        by_prefix = client.watch_secrets(name_prefix="g/")
        await anext(by_id)
        await anext(by_prefix)
        for name in ("g/c", "f/b", "f/a", "g/c"):
            await client.put_secret_value(secret_id=name, secret_string="2")
        assert [(await next_change(by_id)).name for _ in range(2)] == ["f/b", "f/a"]
        assert [(await next_change(by_prefix)).name for _ in range(2)] == ["g/c", "g/c"]
        await by_id.aclose()
        await by_prefix.aclose()
        with pytest.raises(errors.Validation):
            async for _ in client.watch_secrets(secret_ids=["bad name!"]):
                pass


async def test_heartbeats_while_idle_carry_a_token_that_resumes(gw: Gateway) -> None:
    async with client_of(gw) as client:
        await client.create_secret(name="hb/a", secret_string="1")
        stream = client.watch_secrets()
        first = await anext(stream)
        beat = await anext(stream)  # nothing changes: the next message is a heartbeat
        assert beat.kind == changes.HEARTBEAT and not beat.arn
        assert changes.decode_token(beat.resume_token) == changes.decode_token(first.resume_token)
        await stream.aclose()
        await client.put_secret_value(secret_id="hb/a", secret_string="2")
        resumed = client.watch_secrets(resume_token=beat.resume_token)
        assert (await next_change(resumed)).name == "hb/a"
        await resumed.aclose()
        # Each stream is one call in the audit trail, however many events it carried.
        page = await client.audit.lookup_events(
            lookup_attributes=[
                audit_pb2.LookupAttribute(attribute_key="EventName", attribute_value="WatchSecrets")
            ]
        )
        assert len(page.events) == 2


async def test_deletion_restore_labels_tags_and_rotation_have_their_kinds(gw: Gateway) -> None:
    async with client_of(gw) as client:
        created = await client.create_secret(name="k/a", secret_string="1")
        stream = client.watch_secrets(secret_ids=["k/a"])
        await anext(stream)
        put = await client.put_secret_value(secret_id="k/a", secret_string="2", version_stages=["STAGED"])
        await client.update_secret_version_stage(
            secret_id="k/a",
            version_stage="AWSCURRENT",
            move_to_version_id=put.version_id,
            remove_from_version_id=created.version_id,
        )
        await client.tag_resource(secret_id="k/a", tags=[{"key": "team", "value": "x"}])
        await client.update_secret(secret_id="k/a", description="d")
        await client.delete_secret(secret_id="k/a", recovery_window_in_days=7)
        await client.restore_secret(secret_id="k/a")
        rotation = await client.call("RotateSecret", secret_id="k/a", rotation_lambda_arn="random-value")
        assert isinstance(rotation, sm.RotateSecretResponse)
        await client.delete_secret(secret_id="k/a", force_delete_without_recovery=True)
        got = [await next_change(stream) for _ in range(8)]
        await stream.aclose()
    assert [e.kind for e in got] == [
        changes.VERSION_CREATED,
        changes.STAGES_CHANGED,
        changes.METADATA_CHANGED,
        changes.METADATA_CHANGED,
        changes.DELETED,
        changes.RESTORED,
        changes.ROTATION_STARTED,
        changes.DELETED,
    ]
    assert (got[0].version_id, list(got[0].version_stages)) == (put.version_id, ["STAGED"])
    assert got[1].version_id == put.version_id and "AWSCURRENT" in got[1].version_stages
    assert got[3].detail == "description"
    assert got[4].detail == "recovery window 7 days"
    assert got[7].detail == "deleted without recovery"
    assert (got[6].version_id, list(got[6].version_stages)) == (rotation.version_id, ["AWSPENDING"])
    assert {e.arn for e in got} == {created.arn}
    assert all(e.HasField("event_time") for e in got)
