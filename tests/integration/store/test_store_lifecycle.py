"""A secret's whole life through the real store (real PostgreSQL, real kms, gRPC over mTLS as "gateway"):
create, put twice, read AWSCURRENT/AWSPREVIOUS, move a custom label, list with filters, delete with a window,
restore, force delete, and the purge once the (moved) clock passes the window."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.core import errors
from coffer.testing.wait import eventually

if TYPE_CHECKING:
    from tests.integration.store.conftest import StoreStack


def token() -> str:
    return str(uuid.uuid4())


ARN_RE = re.compile(r"^arn:aws:secretsmanager:local-1:000000000000:secret:(?P<name>.+)-[A-Za-z0-9]{6}$")


def stages(resp: pb.DescribeSecretResponse) -> dict[str, list[str]]:
    return {vid: list(s.stages) for vid, s in resp.version_ids_to_stages.items()}


def ts(value: object) -> datetime:
    return value.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


async def test_full_lifecycle(stack: StoreStack) -> None:
    s = stack.store
    t1, t2, t3 = token(), token(), token()

    created = await s.CreateSecret(
        pb.CreateSecretRequest(
            name="app/db",
            client_request_token=t1,
            secret_string="v1-value",
            description="The app database",
            tags=[pb.Tag(key="team", value="payments")],
        )
    )
    m = ARN_RE.match(created.arn)
    assert m and m["name"] == "app/db"
    assert (created.name, created.version_id) == ("app/db", t1)

    put2 = await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="app/db", client_request_token=t2, secret_string="v2")
    )
    assert (put2.arn, put2.version_id, list(put2.version_stages)) == (created.arn, t2, ["AWSCURRENT"])
    put3 = await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id=created.arn, client_request_token=t3, secret_binary=b"\x00v3\xff")
    )
    assert list(put3.version_stages) == ["AWSCURRENT"]

    current = await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="app/db"))
    assert current.secret_binary == b"\x00v3\xff" and not current.HasField("secret_string")
    assert (current.version_id, list(current.version_stages)) == (t3, ["AWSCURRENT"])
    previous = await s.GetSecretValue(
        pb.GetSecretValueRequest(secret_id="app/db", version_stage="AWSPREVIOUS")
    )
    assert (previous.secret_string, previous.version_id) == ("v2", t2)
    # the deprecated first version is still readable by id (partial ARN as the SecretId)
    partial = created.arn.rsplit("-", 1)[0]
    first = await s.GetSecretValue(pb.GetSecretValueRequest(secret_id=partial, version_id=t1))
    assert (first.secret_string, list(first.version_stages)) == ("v1-value", [])

    described = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="app/db"))
    assert stages(described) == {t2: ["AWSPREVIOUS"], t3: ["AWSCURRENT"]}
    assert described.description == "The app database"
    assert [(t.key, t.value) for t in described.tags.tags] == [("team", "payments")]
    assert not described.HasField("kms_key_id")  # default key
    assert not described.HasField("deleted_date") and not described.HasField("rotation_enabled")
    today = stack.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert ts(described.last_accessed_date) == today

    # a custom label: attach it (it is unattached, so no RemoveFromVersionId), then move it
    await s.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(secret_id="app/db", version_stage="blue", move_to_version_id=t1)
    )
    await s.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(
            secret_id="app/db", version_stage="blue", move_to_version_id=t2, remove_from_version_id=t1
        )
    )
    blue = await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="app/db", version_stage="blue"))
    assert (blue.version_id, sorted(blue.version_stages)) == (t2, ["AWSPREVIOUS", "blue"])
    # rollback: AWSCURRENT back to v2, AWSPREVIOUS follows to v3
    await s.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(
            secret_id="app/db", version_stage="AWSCURRENT", move_to_version_id=t2, remove_from_version_id=t3
        )
    )
    described = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="app/db"))
    assert stages(described) == {t2: ["AWSCURRENT", "blue"], t3: ["AWSPREVIOUS"]}

    versions = await s.ListSecretVersionIds(pb.ListSecretVersionIdsRequest(secret_id="app/db"))
    assert [v.version_id for v in versions.versions] == [t2, t3]
    assert all(list(v.kms_key_ids) == ["DefaultEncryptionKey"] for v in versions.versions)
    everything = await s.ListSecretVersionIds(
        pb.ListSecretVersionIdsRequest(secret_id="app/db", include_deprecated=True)
    )
    assert [v.version_id for v in everything.versions] == [t1, t2, t3]  # oldest first
    assert list(everything.versions[0].version_stages) == []  # deprecated: no stages

    # delete with a 7-day window
    deleted = await s.DeleteSecret(pb.DeleteSecretRequest(secret_id="app/db", recovery_window_in_days=7))
    assert ts(deleted.deletion_date) == stack.clock.now() + timedelta(days=7)
    described = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="app/db"))
    assert ts(described.deleted_date) == stack.clock.now()
    with pytest.raises(errors.InvalidRequest, match="marked for deletion"):
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="app/db"))
    assert [e.name for e in (await s.ListSecrets(pb.ListSecretsRequest())).secret_list] == []
    listed = await s.ListSecrets(pb.ListSecretsRequest(include_planned_deletion=True))
    assert [e.name for e in listed.secret_list] == ["app/db"] and listed.secret_list[0].HasField(
        "deleted_date"
    )
    # versions are still listed while pending deletion
    assert (
        len((await s.ListSecretVersionIds(pb.ListSecretVersionIdsRequest(secret_id="app/db"))).versions) == 2
    )

    # restore: usable again, versions and labels intact, no DeletedDate
    restored = await s.RestoreSecret(pb.RestoreSecretRequest(secret_id="app/db"))
    assert restored.arn == created.arn
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="app/db"))).secret_string == "v2"
    assert not (await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="app/db"))).HasField("deleted_date")

    # default window is 30 days; nothing is purged before it ends, everything after
    deleted = await s.DeleteSecret(pb.DeleteSecretRequest(secret_id="app/db"))
    assert ts(deleted.deletion_date) == stack.clock.now() + timedelta(days=30)
    stack.clock.advance(timedelta(days=29))
    assert await stack.store_runtime.purge_now() == []
    stack.clock.advance(timedelta(days=1, seconds=1))
    assert await stack.store_runtime.purge_now() == [created.arn]
    with pytest.raises(errors.NotFound):
        await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="app/db"))
    counts = await stack.counts()
    assert (counts["secrets"], counts["versions"], counts["labels"]) == (0, 0, 0)

    # the name is free again; the old full ARN does not reach the new secret
    again = await s.CreateSecret(
        pb.CreateSecretRequest(name="app/db", client_request_token=token(), secret_string="new")
    )
    assert again.arn != created.arn
    with pytest.raises(errors.NotFound):
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id=created.arn))

    # force delete: gone at once; force-deleting it again (or anything unknown) is not an error
    forced = await s.DeleteSecret(
        pb.DeleteSecretRequest(secret_id="app/db", force_delete_without_recovery=True)
    )
    assert ts(forced.deletion_date) == stack.clock.now()
    with pytest.raises(errors.NotFound):
        await s.DescribeSecret(pb.DescribeSecretRequest(secret_id=again.arn))
    await s.DeleteSecret(pb.DeleteSecretRequest(secret_id="app/db", force_delete_without_recovery=True))


async def test_background_purge_loop_runs_on_its_interval(stack: StoreStack) -> None:
    from dataclasses import replace

    from coffer.loops import cancel_and_wait
    from coffer.store.__main__ import serve

    await stack.store.CreateSecret(
        pb.CreateSecretRequest(name="short-lived", client_request_token=token(), secret_string="x")
    )
    await stack.store.DeleteSecret(pb.DeleteSecretRequest(secret_id="short-lived", recovery_window_in_days=7))
    stack.clock.advance(timedelta(days=8))
    # One store replica purges at a time (coffer.leader): the fixture's store, whose loop waits an hour,
    # stands down (its purge task ends, releasing the lock) so the new one's is elected.
    await cancel_and_wait(stack.store_runtime.purge_task)
    fast = await serve(replace(stack.settings, purge_interval_seconds=0.05), clock=stack.clock)
    try:
        await eventually(
            lambda: stack.db.fetchval("SELECT count(*) FROM store.secrets"),
            until=lambda count: count == 0,
            timeout=5,
            interval=0.05,
            message="the background purge",
        )
        assert await stack.db.fetchval("SELECT count(*) FROM store.secrets") == 0
        assert await stack.db.fetchval("SELECT count(*) FROM store.outbox WHERE event = 'PurgeSecret'") == 1
    finally:
        await fast.aclose()


async def test_idempotent_retries(stack: StoreStack) -> None:
    s = stack.store
    t1, t2 = token(), token()
    first = await s.CreateSecret(
        pb.CreateSecretRequest(name="idem", client_request_token=t1, secret_string="a")
    )
    # CreateSecret retried with the same token and value: identical response, nothing new
    assert (
        await s.CreateSecret(pb.CreateSecretRequest(name="idem", client_request_token=t1, secret_string="a"))
        == first
    )
    before = await stack.counts()
    put = await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="idem", client_request_token=t2, secret_string="b")
    )
    again = await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="idem", client_request_token=t2, secret_string="b")
    )
    assert again == put
    # a retried put of an older token is a no-op returning that version's current labels
    old = await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="idem", client_request_token=t1, secret_string="a")
    )
    assert (old.version_id, list(old.version_stages)) == (t1, ["AWSPREVIOUS"])
    # UpdateSecret with the same token and value succeeds with VersionId = token and creates nothing
    upd = await s.UpdateSecret(
        pb.UpdateSecretRequest(secret_id="idem", client_request_token=t2, secret_string="b")
    )
    assert upd.version_id == t2
    after = await stack.counts()
    assert after["versions"] == before["versions"] + 1
    assert after["outbox"] == before["outbox"] + 1


async def test_update_secret(stack: StoreStack) -> None:
    s = stack.store
    await s.CreateSecret(pb.CreateSecretRequest(name="upd", client_request_token=token(), secret_string="a"))
    meta = await s.UpdateSecret(
        pb.UpdateSecretRequest(secret_id="upd", client_request_token=token(), description="d1")
    )
    assert not meta.HasField("version_id")  # metadata only: no version, the SDK's token is ignored
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="upd"))
    assert d.description == "d1" and len(d.version_ids_to_stages) == 1
    t = token()
    val = await s.UpdateSecret(
        pb.UpdateSecretRequest(secret_id="upd", client_request_token=t, secret_string="b", type="custom")
    )
    assert val.version_id == t
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="upd"))
    assert d.description == "d1" and d.type == "custom"  # omitted fields stay unchanged
    assert stages(d)[t] == ["AWSCURRENT"]
    assert (await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="upd"))).secret_string == "b"


async def test_secret_without_value(stack: StoreStack) -> None:
    s = stack.store
    created = await s.CreateSecret(pb.CreateSecretRequest(name="empty"))
    assert not created.HasField("version_id")
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="empty"))
    assert len(d.version_ids_to_stages) == 0 and not d.HasField("tags")
    with pytest.raises(errors.NotFound) as info:
        await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="empty"))
    assert (
        info.value.message
        == "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT"
    )
    # the first value ever is AWSCURRENT even when other labels were asked for
    t = token()
    put = await s.PutSecretValue(
        pb.PutSecretValueRequest(
            secret_id="empty", client_request_token=t, secret_string="x", version_stages=["custom"]
        )
    )
    assert sorted(put.version_stages) == ["AWSCURRENT", "custom"]


async def test_tags(stack: StoreStack) -> None:
    s = stack.store
    await s.CreateSecret(
        pb.CreateSecretRequest(name="tagged", client_request_token=token(), secret_string="x")
    )
    assert not (await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="tagged"))).HasField("tags")
    await s.TagResource(
        pb.TagResourceRequest(
            secret_id="tagged", tags=[pb.Tag(key="a", value="1"), pb.Tag(key="b", value="2")]
        )
    )
    await s.TagResource(
        pb.TagResourceRequest(
            secret_id="tagged", tags=[pb.Tag(key="a", value="9"), pb.Tag(key="c", value="")]
        )
    )
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="tagged"))
    assert [(t.key, t.value) for t in d.tags.tags] == [("a", "9"), ("b", "2"), ("c", "")]
    await s.UntagResource(pb.UntagResourceRequest(secret_id="tagged", tag_keys=["a", "zz"]))
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="tagged"))
    assert [t.key for t in d.tags.tags] == ["b", "c"]
    await s.UntagResource(pb.UntagResourceRequest(secret_id="tagged", tag_keys=["b", "c"]))
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="tagged"))
    assert d.HasField("tags") and list(d.tags.tags) == []  # [] after every tag was removed
    with pytest.raises(errors.InvalidParameter, match="reserved"):
        await s.TagResource(pb.TagResourceRequest(secret_id="tagged", tags=[pb.Tag(key="aws:x", value="1")]))


async def test_list_secrets_filters_sort_and_pages(stack: StoreStack) -> None:
    s = stack.store
    specs = [
        ("prod/AppBeta/db", "Primary database", [("env", "prod")]),
        ("prod/AppBeta/cache", "Cache password", [("env", "prod"), ("tier", "gold")]),
        ("dev/AppBeta/db", "Dev database", [("env", "dev")]),
        ("COMPANYthings", None, []),
    ]
    for name, description, tags in specs:
        req = pb.CreateSecretRequest(
            name=name,
            client_request_token=token(),
            secret_string="x",
            tags=[pb.Tag(key=k, value=v) for k, v in tags],
        )
        if description:
            req.description = description
        await s.CreateSecret(req)
        stack.clock.advance(timedelta(seconds=1))

    async def names(
        *filters: tuple[str, list[str]], sort_by: str | None = None, sort_order: str | None = None
    ) -> list[str]:
        req = pb.ListSecretsRequest(filters=[pb.Filter(key=k, values=v) for k, v in filters])
        if sort_by:
            req.sort_by = sort_by
        if sort_order:
            req.sort_order = sort_order
        resp = await s.ListSecrets(req)
        return [e.name for e in resp.secret_list]

    assert await names() == [n for n, _, _ in specs]  # created-date, oldest first
    assert await names(("name", ["prod/"])) == ["prod/AppBeta/db", "prod/AppBeta/cache"]
    assert await names(("tag-key", ["tier"])) == ["prod/AppBeta/cache"]
    assert await names(("tag-value", ["prod", "dev"]), ("description", ["database"])) == [
        "prod/AppBeta/db",
        "dev/AppBeta/db",
    ]
    assert await names(("all", ["beta"])) == ["prod/AppBeta/db", "prod/AppBeta/cache", "dev/AppBeta/db"]
    assert await names(("all", ["compan"])) == ["COMPANYthings"]
    assert await names(("name", ["!prod"])) == ["dev/AppBeta/db", "COMPANYthings"]
    assert await names(sort_by="name") == sorted(n for n, _, _ in specs)
    assert await names(sort_order="desc") == [n for n, _, _ in specs][::-1]

    entry = (
        await s.ListSecrets(pb.ListSecretsRequest(filters=[pb.Filter(key="name", values=["COMPANY"])]))
    ).secret_list[0]
    assert len(entry.secret_versions_to_stages) == 1 and not entry.HasField("tags")

    seen: list[str] = []
    next_token: str | None = None
    while True:
        page_req = pb.ListSecretsRequest(max_results=3)
        if next_token:
            page_req.next_token = next_token
        resp = await s.ListSecrets(page_req)
        seen += [e.name for e in resp.secret_list]
        if not resp.HasField("next_token"):
            break
        next_token = resp.next_token
    assert seen == [n for n, _, _ in specs]
    with pytest.raises(errors.InvalidNextToken):
        await s.ListSecrets(pb.ListSecretsRequest(next_token="bogus"))


async def test_batch_get_secret_value(stack: StoreStack) -> None:
    s = stack.store
    a = await s.CreateSecret(
        pb.CreateSecretRequest(name="batch/a", client_request_token=token(), secret_string="A")
    )
    await s.CreateSecret(
        pb.CreateSecretRequest(name="batch/b", client_request_token=token(), secret_binary=b"B")
    )
    await s.CreateSecret(
        pb.CreateSecretRequest(name="batch/gone", client_request_token=token(), secret_string="G")
    )
    await s.DeleteSecret(pb.DeleteSecretRequest(secret_id="batch/gone"))
    await s.CreateSecret(
        pb.CreateSecretRequest(name="other", client_request_token=token(), secret_string="O")
    )

    resp = await s.BatchGetSecretValue(
        pb.BatchGetSecretValueRequest(secret_id_list=[a.arn, "batch/b", "batch/gone", "nope"])
    )
    assert [(v.name, v.secret_string or v.secret_binary) for v in resp.secret_values] == [
        ("batch/a", "A"),
        ("batch/b", b"B"),
    ]
    assert all(list(v.version_stages) == ["AWSCURRENT"] for v in resp.secret_values)
    assert [(e.secret_id, e.error_code) for e in resp.errors] == [
        ("batch/gone", "InvalidRequestException"),
        ("nope", "ResourceNotFoundException"),
    ]

    page1 = await s.BatchGetSecretValue(
        pb.BatchGetSecretValueRequest(filters=[pb.Filter(key="name", values=["batch/"])], max_results=1)
    )
    assert [v.name for v in page1.secret_values] == ["batch/a"] and page1.HasField("next_token")
    page2 = await s.BatchGetSecretValue(
        pb.BatchGetSecretValueRequest(
            filters=[pb.Filter(key="name", values=["batch/"])], max_results=1, next_token=page1.next_token
        )
    )
    assert [v.name for v in page2.secret_values] == ["batch/b"] and not page2.HasField("next_token")


async def test_every_write_leaves_one_outbox_row_and_a_notification(stack: StoreStack) -> None:
    got: list[str] = []
    await stack.db.add_listener("coffer_store_changed", lambda *args: got.append(args[-1]))
    s = stack.store
    created = await s.CreateSecret(
        pb.CreateSecretRequest(name="out", client_request_token=token(), secret_string="x")
    )
    await s.PutSecretValue(
        pb.PutSecretValueRequest(secret_id="out", client_request_token=token(), secret_string="y")
    )
    await s.TagResource(pb.TagResourceRequest(secret_id="out", tags=[pb.Tag(key="k", value="v")]))
    await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="out"))  # reads write nothing
    rows = await stack.db.fetch(
        "SELECT event, change_seq, secret_arn, payload::text FROM store.outbox ORDER BY id"
    )
    assert [(r["event"], r["change_seq"]) for r in rows] == [
        ("CreateSecret", 1),
        ("PutSecretValue", 2),
        ("TagResource", 3),
    ]
    assert {r["secret_arn"] for r in rows} == {created.arn}
    assert all("VALUE-0x" not in r["payload"] for r in rows)
    await eventually(lambda: len(got) == 3, timeout=1, interval=0.02, message="three events")
    assert got == [created.arn] * 3


async def test_concurrent_writes_stay_consistent(stack: StoreStack) -> None:
    s = stack.store
    t = token()
    same = pb.CreateSecretRequest(name="race", client_request_token=t, secret_string="v")
    # the same create retried concurrently: one inserts, the other replays it
    first, second = await asyncio.gather(s.CreateSecret(same), s.CreateSecret(same))
    assert first == second and first.version_id == t
    # a concurrent create with another token loses with ResourceExistsException
    results = await asyncio.gather(
        s.CreateSecret(pb.CreateSecretRequest(name="race2", client_request_token=token(), secret_string="a")),
        s.CreateSecret(pb.CreateSecretRequest(name="race2", client_request_token=token(), secret_string="b")),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["AlreadyExists", "CreateSecretResponse"]
    # many concurrent puts: every one lands, exactly one AWSCURRENT and one AWSPREVIOUS remain
    tokens = [token() for _ in range(8)]
    await asyncio.gather(
        *(
            s.PutSecretValue(
                pb.PutSecretValueRequest(secret_id="race", client_request_token=tk, secret_string=tk)
            )
            for tk in tokens
        )
    )
    d = await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="race"))
    flat = [label for st in d.version_ids_to_stages.values() for label in st.stages]
    assert sorted(flat) == ["AWSCURRENT", "AWSPREVIOUS"]
    current = await s.GetSecretValue(pb.GetSecretValueRequest(secret_id="race"))
    assert current.secret_string == current.version_id and current.version_id in tokens
    assert await stack.db.fetchval("SELECT count(*) FROM store.versions") == 1 + 8 + 1


async def test_secret_id_resolution_follows_aws(stack: StoreStack) -> None:
    """SecretId resolution as AWS does it (aws-secrets-manager.md §3), over gRPC:

    - a full ARN (resource part ending in ``-`` + 6 alphanumerics) matches that exact ARN and nothing else;
    - a partial ARN (no such ending) matches by name;
    - a plain name matches by name, also when the name itself ends in ``-`` + 6 characters (``db-abcdef``);
    - the partial ARN of such a name reads as a full ARN: ResourceNotFoundException, no name fallback;
    - an ARN of another region, another account (with no such secret) or another partition, or a full ARN
      with a wrong suffix: ResourceNotFoundException.
    """
    s = stack.store
    plain = await s.CreateSecret(
        pb.CreateSecretRequest(name="app/cfg", client_request_token=token(), secret_string="cfg")
    )
    odd = await s.CreateSecret(
        pb.CreateSecretRequest(name="db-abcdef", client_request_token=token(), secret_string="odd")
    )
    here = "arn:aws:secretsmanager:local-1:000000000000:secret:"

    async def value(secret_id: str) -> str:
        reply: pb.GetSecretValueResponse = await s.GetSecretValue(
            pb.GetSecretValueRequest(secret_id=secret_id)
        )
        return reply.secret_string

    assert await value(plain.arn) == "cfg"  # full ARN
    assert await value(here + "app/cfg") == "cfg"  # partial ARN
    assert await value("app/cfg") == "cfg"
    assert await value(odd.arn) == "odd"  # full ARN: db-abcdef-XXXXXX
    assert await value("db-abcdef") == "odd"  # by name
    assert (await s.DescribeSecret(pb.DescribeSecretRequest(secret_id="db-abcdef"))).arn == odd.arn

    wrong_suffix = plain.arn[:-6] + ("zzzzzz" if not plain.arn.endswith("zzzzzz") else "yyyyyy")
    for absent in (
        here + "db-abcdef",  # partial ARN of a name ending in -XXXXXX: read as a full ARN, not found
        wrong_suffix,
        plain.arn.replace(":local-1:", ":local-2:"),  # another region
        plain.arn.replace(":000000000000:", ":111111111111:"),  # another account
        here.replace("arn:aws:", "arn:aws-cn:") + "app/cfg",  # another partition
    ):
        with pytest.raises(errors.NotFound) as e:
            await value(absent)
        assert e.value.code == "ResourceNotFoundException", absent
        assert e.value.message == "Secrets Manager can't find the specified secret.", absent
        with pytest.raises(errors.NotFound):
            await s.DescribeSecret(pb.DescribeSecretRequest(secret_id=absent))
    # A write through the suffix-looking partial ARN touches nothing either.
    with pytest.raises(errors.NotFound):
        await s.PutSecretValue(
            pb.PutSecretValueRequest(
                secret_id=here + "db-abcdef", client_request_token=token(), secret_string="x"
            )
        )
    assert await value("db-abcdef") == "odd"
