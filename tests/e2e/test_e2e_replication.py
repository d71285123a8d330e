"""Cross-region replication between two whole deployments (regions ``local-1`` and ``local-2``, each with its
own kms, store, gateway and rotation processes, database, PKI and root key, peers of each other), driven as a
user would: the real ``coffer`` command with ``--region`` (before or after the command), and the SDK's
``CofferClient.from_profile(region=...)`` where a test needs many calls quickly."""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from coffer.client.sync import CofferClient
from coffer.core.errors import CofferError
from coffer.testing.wait import eventually_sync

pytestmark = pytest.mark.e2e

SM = "secretsmanager"
PRIMARY, REPLICA = "local-1", "local-2"
REPLICA_ERROR = "Operation not permitted on a replica secret. Call must be made in primary secret's region."
#: Bounded waits: replication normally takes well under a second here.
WAIT_SECONDS = 60.0


@pytest.fixture(scope="module")
def regions(e2e_regions_factory: Callable[[int], Any]) -> Any:
    return e2e_regions_factory(2)


@pytest.fixture(scope="module")
def clients(regions: Any) -> Iterator[dict[str, CofferClient]]:
    opened = {r: CofferClient.from_profile(regions.profile_path, region=r) for r in (PRIMARY, REPLICA)}
    yield opened
    for client in opened.values():
        client.close()


def sm(regions: Any, region: str, *args: str) -> Any:
    """``coffer --region <region> secretsmanager <args>`` (must succeed; JSON answer)."""
    return regions.cli_json("--region", region, SM, *args)


def sm_fails(regions: Any, region: str, *args: str) -> tuple[str, str]:
    """``coffer secretsmanager <args> --region <region>``, which must fail with a service error: returns
    (code, message)."""
    result = regions.cli(SM, *args, "--region", region)
    assert result.returncode == 254, (result.returncode, result.stdout, result.stderr)
    header, _, message = result.stderr.partition(": ")
    code = header.split("(", 1)[1].split(")", 1)[0]
    return code, message.strip()


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy (then return it); fail after ``timeout``."""
    return eventually_sync(
        check,
        timeout=timeout,
        interval=0.2,
        message=f"waiting for {what}",
        retry_on=(AssertionError, CofferError),
    )


def stages(describe: dict[str, Any]) -> dict[str, list[str]]:
    return {vid: sorted(labels) for vid, labels in describe.get("VersionIdsToStages", {}).items()}


def status_of(describe: dict[str, Any], region: str) -> dict[str, Any] | None:
    for item in describe.get("ReplicationStatus", []):
        if item.get("Region") == region:
            return dict(item)
    return None


def in_sync(regions: Any, secret_id: str) -> bool:
    status = status_of(sm(regions, PRIMARY, "describe-secret", "--secret-id", secret_id), REPLICA)
    return status is not None and status.get("Status") == "InSync"


def replica_arn(primary_arn: str) -> str:
    return primary_arn.replace(f":{PRIMARY}:", f":{REPLICA}:", 1)


def versions(regions: Any, region: str, secret_id: str) -> list[tuple[str, tuple[str, ...], Any]]:
    """Every version (ListSecretVersionIds --include-deprecated, all pages via the CLI) as (id, labels,
    created date), oldest first."""
    found: list[tuple[str, tuple[str, ...], Any]] = []
    token: str | None = None
    while True:
        extra = ("--next-token", token) if token else ()
        page = sm(
            regions,
            region,
            "list-secret-version-ids",
            "--secret-id",
            secret_id,
            "--include-deprecated",
            "--max-results",
            "100",
            *extra,
        )
        found += [
            (v["VersionId"], tuple(sorted(v.get("VersionStages", []))), v["CreatedDate"])
            for v in page.get("Versions", [])
        ]
        token = page.get("NextToken")
        if not token:
            return sorted(found, key=lambda v: (v[2], v[0]))


def create_replicated(regions: Any, value: str | None) -> dict[str, Any]:
    name = f"e2e-repl/{uuid.uuid4().hex[:10]}"
    value_args = ("--secret-string", value) if value is not None else ()
    created = sm(
        regions,
        PRIMARY,
        "create-secret",
        "--name",
        name,
        *value_args,
        "--add-replica-regions",
        f"Region={REPLICA}",
    )
    assert created["Name"] == name
    status = status_of(sm(regions, PRIMARY, "describe-secret", "--secret-id", name), REPLICA)
    assert status is not None and status["Status"] in ("InProgress", "InSync", "Failed"), status
    wait_for(f"{name} in {REPLICA}", lambda: sm(regions, REPLICA, "describe-secret", "--secret-id", name))
    return dict(created)


def test_status_covers_both_regions(regions: Any) -> None:
    result = regions.cli("status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    serving = [line for line in lines if line.split()[-1] == "SERVING"]
    assert len(serving) == 8
    assert {line.split()[0] for line in lines} == {PRIMARY, REPLICA}
    # then each region's rotation queue and its replication to the other, from the services' metrics
    others = [line.split(maxsplit=1)[1] for line in lines if line not in serving]
    assert sum(o.startswith("rotation-queue  waiting ") for o in others) == 2, others
    assert sum(o.startswith("replication  to ") and " lag " in o for o in others) == 2, others


def test_region_option_reaches_that_region_only(regions: Any) -> None:
    name = f"e2e-repl/local-only-{uuid.uuid4().hex[:8]}"
    created = sm(regions, REPLICA, "create-secret", "--name", name, "--secret-string", "only here")
    assert f":secretsmanager:{REPLICA}:" in created["ARN"]
    code, _ = sm_fails(regions, PRIMARY, "describe-secret", "--secret-id", name)
    assert code == "ResourceNotFoundException"
    assert "PrimaryRegion" not in sm(regions, REPLICA, "describe-secret", "--secret-id", name)
    sm(regions, REPLICA, "delete-secret", "--secret-id", name, "--force-delete-without-recovery")


def test_replica_follows_the_primary_and_refuses_writes(regions: Any) -> None:
    created = create_replicated(regions, "first value")
    name, arn = created["Name"], created["ARN"]

    got = sm(regions, REPLICA, "get-secret-value", "--secret-id", name)
    assert got["SecretString"] == "first value" and got["VersionId"] == created["VersionId"]
    assert got["ARN"] == replica_arn(arn)
    described = sm(regions, REPLICA, "describe-secret", "--secret-id", replica_arn(arn))
    assert described["PrimaryRegion"] == PRIMARY and described["ARN"] == replica_arn(arn)
    assert stages(described) == stages(sm(regions, PRIMARY, "describe-secret", "--secret-id", name))
    listed = sm(regions, REPLICA, "list-secrets", "--filters", f"Key=name,Values={name}")
    assert [(s["Name"], s.get("PrimaryRegion")) for s in listed["SecretList"]] == [(name, PRIMARY)]

    put = sm(regions, PRIMARY, "put-secret-value", "--secret-id", name, "--secret-string", "second value")
    wait_for(
        "the new value in the replica",
        lambda: (
            sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["VersionId"] == put["VersionId"]
        ),
    )
    assert sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["SecretString"] == "second value"
    previous = sm(regions, REPLICA, "get-secret-value", "--secret-id", name, "--version-stage", "AWSPREVIOUS")
    assert previous["SecretString"] == "first value"
    wait_for("InSync", lambda: in_sync(regions, name))
    primary_stages = stages(sm(regions, PRIMARY, "describe-secret", "--secret-id", name))
    assert stages(sm(regions, REPLICA, "describe-secret", "--secret-id", name)) == primary_stages

    before = versions(regions, REPLICA, name)
    for args in (
        ("put-secret-value", "--secret-id", name, "--secret-string", "written in the replica"),
        ("update-secret", "--secret-id", name, "--description", "changed in the replica"),
        ("tag-resource", "--secret-id", name, "--tags", "Key=k,Value=v"),
        ("delete-secret", "--secret-id", name, "--force-delete-without-recovery"),
    ):
        assert sm_fails(regions, REPLICA, *args) == ("InvalidParameterException", REPLICA_ERROR), args
    assert versions(regions, REPLICA, name) == before
    after = sm(regions, REPLICA, "describe-secret", "--secret-id", name)
    assert "Description" not in after and not after.get("Tags")
    assert sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["SecretString"] == "second value"


def test_a_rotation_in_the_primary_reaches_the_replica(regions: Any) -> None:
    created = create_replicated(regions, "before rotation")
    name = created["Name"]
    code, message = sm_fails(
        regions, REPLICA, "rotate-secret", "--secret-id", name, "--rotation-lambda-arn", "random-value"
    )
    assert (code, message) == ("InvalidParameterException", REPLICA_ERROR)
    rotated = sm(
        regions, PRIMARY, "rotate-secret", "--secret-id", name, "--rotation-lambda-arn", "random-value"
    )
    new_version = rotated["VersionId"]
    wait_for(
        "the rotation to finish in the primary",
        lambda: sm(regions, PRIMARY, "get-secret-value", "--secret-id", name)["VersionId"] == new_version,
    )
    primary_value = sm(regions, PRIMARY, "get-secret-value", "--secret-id", name)["SecretString"]
    assert primary_value != "before rotation"
    wait_for(
        "the rotated value in the replica",
        lambda: sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["VersionId"] == new_version,
    )
    assert sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["SecretString"] == primary_value
    replica = sm(regions, REPLICA, "describe-secret", "--secret-id", name)
    assert replica.get("RotationEnabled") is True and replica.get("RotationLambdaARN") == "random-value"
    assert stages(replica) == stages(sm(regions, PRIMARY, "describe-secret", "--secret-id", name))


def test_backlog_drains_in_order_after_the_replica_region_restarts(
    regions: Any, clients: dict[str, CofferClient]
) -> None:
    created = create_replicated(regions, None)  # no value yet: the 100 writes are its 100 versions
    name = created["Name"]
    wait_for("InSync", lambda: in_sync(regions, name))
    replica = regions[REPLICA].deployment

    replica.stop_services()  # all four processes of local-2
    try:
        assert not replica.processes
        written: dict[str, str] = {}
        for i in range(1, 101):
            put = clients[PRIMARY].put_secret_value(secret_id=name, secret_string=f"value {i}")
            written[put.version_id] = f"value {i}"
        assert len(written) == 100
        behind = wait_for(
            "the primary to report the replica behind",
            lambda: (
                (s := status_of(sm(regions, PRIMARY, "describe-secret", "--secret-id", name), REPLICA))
                and s["Status"] in ("InProgress", "Failed")
                and s
            ),
        )
        print(f"\nwhile {REPLICA} is down the primary reports: {behind}")
    finally:
        replica.start_services()
    wait_for("InSync after the restart", lambda: in_sync(regions, name), timeout=120.0)
    primary_versions = versions(regions, PRIMARY, name)
    replica_versions = versions(regions, REPLICA, name)
    assert len(primary_versions) == 100
    assert replica_versions == primary_versions  # same ids, labels and creation dates: none lost, none twice
    assert len({v[0] for v in replica_versions}) == 100
    # In order: the primary's creation order is the order of the writes, and the replica kept it.
    assert [written[v[0]] for v in replica_versions] == [f"value {i}" for i in range(1, 101)]
    replica_client = clients[REPLICA]
    for version_id, value in written.items():
        got = replica_client.get_secret_value(secret_id=name, version_id=version_id)
        assert got.secret_string == value
    assert sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["SecretString"] == "value 100"


def test_stop_replication_promotes_and_remove_deletes_the_replica(regions: Any) -> None:
    promoted = create_replicated(regions, "before promotion")
    name = promoted["Name"]
    code, message = sm_fails(regions, PRIMARY, "delete-secret", "--secret-id", name)
    assert code == "InvalidParameterException"
    assert message == f"You can't delete secret {promoted['ARN']} that still has replica regions [{REPLICA}]."

    stopped = sm(regions, REPLICA, "stop-replication-to-replica", "--secret-id", name)
    assert stopped["ARN"] == replica_arn(promoted["ARN"])
    standalone = sm(regions, REPLICA, "describe-secret", "--secret-id", name)
    assert standalone.get("PrimaryRegion") in (None, REPLICA)
    own = sm(regions, REPLICA, "put-secret-value", "--secret-id", name, "--secret-string", "now mine")
    assert sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["VersionId"] == own["VersionId"]
    sm(regions, PRIMARY, "put-secret-value", "--secret-id", name, "--secret-string", "primary moved on")
    time.sleep(2.0)  # several replication rounds: nothing may flow to the promoted secret any more
    assert sm(regions, REPLICA, "get-secret-value", "--secret-id", name)["SecretString"] == "now mine"

    removed = create_replicated(regions, "to be removed")
    answer = sm(
        regions,
        PRIMARY,
        "remove-regions-from-replication",
        "--secret-id",
        removed["Name"],
        "--remove-replica-regions",
        REPLICA,
    )
    assert answer["ARN"] == removed["ARN"] and status_of(answer, REPLICA) is None
    wait_for(
        "the replica to be deleted",
        lambda: (
            sm_fails(regions, REPLICA, "describe-secret", "--secret-id", removed["Name"])[0]
            == "ResourceNotFoundException"
        ),
    )
    assert status_of(sm(regions, PRIMARY, "describe-secret", "--secret-id", removed["Name"]), REPLICA) is None
    sm(regions, PRIMARY, "delete-secret", "--secret-id", removed["Name"], "--force-delete-without-recovery")


def test_replication_lag_for_a_burst_of_writes(regions: Any, clients: dict[str, CofferClient]) -> None:
    """Client-side lag: each write's return in local-1 → the version first listed in local-2 (a poller
    lists the replica's versions every 10 ms while the burst runs). Printed; no threshold."""
    created = create_replicated(regions, "lag 0")
    name = created["Name"]
    wait_for("InSync", lambda: in_sync(regions, name))
    written_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    done = threading.Event()
    burst = 50

    def poll() -> None:
        client = clients[REPLICA]

        def all_seen() -> bool:
            now = time.monotonic()
            page = client.list_secret_version_ids(secret_id=name, include_deprecated=True, max_results=100)
            for version in page.versions:
                seen_at.setdefault(version.version_id, now)
            return done.is_set() and all(v in seen_at for v in written_at)

        with contextlib.suppress(AssertionError):  # what never arrived is asserted below
            eventually_sync(all_seen, timeout=WAIT_SECONDS, interval=0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        for i in range(1, burst + 1):
            put = clients[PRIMARY].put_secret_value(secret_id=name, secret_string=f"lag {i}")
            written_at[put.version_id] = time.monotonic()
    finally:
        done.set()
        poller.join(WAIT_SECONDS + 5)
    missing = [v for v in written_at if v not in seen_at]
    assert not missing, f"{len(missing)} of {burst} versions never reached {REPLICA}"
    lags = sorted(max(0.0, seen_at[v] - t) * 1000 for v, t in written_at.items())
    p50 = statistics.median(lags)
    p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
    print(
        f"\nreplication lag {PRIMARY}→{REPLICA}, burst of {burst} writes (client-observed, 10 ms poll): "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {lags[-1]:.0f} ms"
    )
    assert p50 <= p99
    shipped = store_lag_metric(regions[PRIMARY].log_dir / "store.log")
    print(
        f"the primary store's own lag metric (commit → acknowledged by {REPLICA}; every sample since the "
        f"store started, including any backlog an earlier test built up): {shipped}"
    )


def store_lag_metric(log_file: Path) -> dict[str, Any]:
    """The replicator's latest ``replication.shipped`` log line: its lag figures (p50/p99/max)."""
    latest: dict[str, Any] = {}
    for line in log_file.read_text(errors="replace").splitlines():
        if "replication.shipped" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        latest = {k: v for k, v in record.items() if k.startswith(("p50", "p99", "lag", "count"))}
    return latest


def _boto_sm(region: Any) -> Any:
    """boto3 (unmodified, from PyPI) on ``region``'s own AWS-protocol endpoint, as that region's admin, once
    the admin's bootstrap key can sign AWS requests (its secret is sealed moments after start)."""

    def client(service: str) -> Any:
        creds = region.admin_credentials
        return boto3.session.Session().client(
            service,
            endpoint_url=region.aws_endpoint_url,
            verify=str(region.ca_file),
            region_name=region.settings.region,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    eventually_sync(
        lambda: client("sts").get_caller_identity(), timeout=30, interval=0.5, retry_on=(ClientError,)
    )
    return client("secretsmanager")


def test_boto3_replicates_to_local_2_and_reads_the_replica_through_its_endpoint(regions: Any) -> None:
    primary, replica = _boto_sm(regions[PRIMARY]), _boto_sm(regions[REPLICA])
    name = f"e2e/boto3-replica-{uuid.uuid4().hex[:8]}"
    created = primary.create_secret(Name=name, SecretString="replicated-by-boto3")
    answer = primary.replicate_secret_to_regions(SecretId=name, AddReplicaRegions=[{"Region": REPLICA}])
    assert [s["Region"] for s in answer["ReplicationStatus"]] == [REPLICA]

    def read_there() -> dict[str, Any]:
        try:
            return dict(replica.get_secret_value(SecretId=name))
        except ClientError as exc:  # not there yet: the replicator has not run
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            raise AssertionError(f"{name} not in {REPLICA} yet") from exc

    got = wait_for("the replica through local-2's AWS endpoint", read_there)
    assert got["SecretString"] == "replicated-by-boto3" and got["VersionId"] == created["VersionId"]
    assert f":{REPLICA}:" in got["ARN"]
    assert wait_for(
        "InSync",
        lambda: (status_of(primary.describe_secret(SecretId=name), REPLICA) or {}).get("Status") == "InSync",
    )
    assert replica.describe_secret(SecretId=name)["PrimaryRegion"] == PRIMARY
    with pytest.raises(ClientError) as refused:
        replica.put_secret_value(SecretId=name, SecretString="written-in-the-replica")
    error = refused.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("InvalidParameterException", REPLICA_ERROR)
    assert replica.get_secret_value(SecretId=name)["SecretString"] == "replicated-by-boto3"
