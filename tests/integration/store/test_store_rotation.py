"""Rotation in the real store (real PostgreSQL, real kms, gRPC over mTLS): RotateSecret and its AWS rules,
CancelRotateSecret, the function registry, and the RotationControlService as the rotation service uses it
(identity "rotation"): due rotations by the moved clock inside the window only, leases, steps, back-off, the
final failure, completion moving labels and dates as AWS does, and ListRotationAttempts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as pb
from coffer.api.store.v1 import store_pb2 as spb
from coffer.api.store.v1 import store_pb2_grpc
from coffer.core import errors
from coffer.rpc.channel import secure_channel
from coffer.rpc.tls import TlsFiles

if TYPE_CHECKING:
    from tests.integration.store.conftest import StoreStack

pytestmark = pytest.mark.integration

PENDING_MSG = "A previous rotation isn't complete. That rotation will be reattempted."


def token() -> str:
    return str(uuid.uuid4())


def ts(value: object) -> datetime:
    return value.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def stages(resp: pb.DescribeSecretResponse) -> dict[str, list[str]]:
    return {vid: sorted(s.stages) for vid, s in resp.version_ids_to_stages.items()}


@pytest.fixture
async def control(stack: StoreStack) -> AsyncIterator[store_pb2_grpc.RotationControlServiceStub]:
    channel = secure_channel(
        f"127.0.0.1:{stack.store_runtime.port}",
        TlsFiles.for_identity(stack.settings.pki_dir, "rotation"),
        server_name="store",
    )
    yield store_pb2_grpc.RotationControlServiceStub(channel)
    await channel.close()


async def make_secret(stack: StoreStack, name: str = "app/db", value: str = "v1") -> tuple[str, str]:
    t = token()
    created = await stack.store.CreateSecret(
        pb.CreateSecretRequest(name=name, client_request_token=t, secret_string=value)
    )
    return created.arn, t


async def run_steps(
    stack: StoreStack,
    control: store_pb2_grpc.RotationControlServiceStub,
    job: spb.RotationJob,
    *,
    worker: str,
    new_value: str,
) -> None:
    """What a worker does for a random-value rotation, through the same RPCs."""
    lease = await control.AcquireRotationLease(
        spb.AcquireRotationLeaseRequest(secret_arn=job.secret_arn, token=job.token, worker_id=worker)
    )
    assert lease.acquired, lease.reason
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        await control.RecordRotationStep(
            spb.RecordRotationStepRequest(
                secret_arn=job.secret_arn, token=job.token, worker_id=worker, step=step, status="started"
            )
        )
        if step == "createSecret":
            await stack.store.PutSecretValue(
                pb.PutSecretValueRequest(
                    secret_id=job.secret_arn,
                    client_request_token=job.token,
                    secret_string=new_value,
                    version_stages=["AWSPENDING"],
                )
            )
        if step == "finishSecret":
            desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=job.secret_arn))
            current = next(v for v, s in stages(desc).items() if "AWSCURRENT" in s)
            await stack.store.UpdateSecretVersionStage(
                pb.UpdateSecretVersionStageRequest(
                    secret_id=job.secret_arn,
                    version_stage="AWSCURRENT",
                    move_to_version_id=job.token,
                    remove_from_version_id=current,
                )
            )
        await control.RecordRotationStep(
            spb.RecordRotationStepRequest(
                secret_arn=job.secret_arn, token=job.token, worker_id=worker, step=step, status="succeeded"
            )
        )
    await control.CompleteRotation(
        spb.CompleteRotationRequest(secret_arn=job.secret_arn, token=job.token, worker_id=worker)
    )


async def test_rotate_secret_requires_a_rotator_the_first_time(stack: StoreStack) -> None:
    arn, _ = await make_secret(stack)
    with pytest.raises(errors.InvalidRequest) as e:
        await stack.store.RotateSecret(pb.RotateSecretRequest(client_request_token=token(), secret_id=arn))
    assert e.value.message == "No Lambda rotation function ARN is associated with this secret."
    with pytest.raises(errors.AccessDenied) as denied:
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(), secret_id=arn, rotation_lambda_arn="no-such-rotator"
            )
        )
    assert "cannot invoke the specified Lambda function" in denied.value.message
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    # Never configured: AWS omits every rotation field.
    assert not desc.HasField("rotation_enabled")
    assert not desc.HasField("rotation_rules")
    assert not desc.HasField("next_rotation_date")
    assert await stack.db.fetchval("SELECT count(*) FROM store.rotation_attempts") == 0


async def test_rotate_secret_creates_placeholder_and_attempt(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, first = await make_secret(stack)
    t = token()
    resp = await stack.store.RotateSecret(
        pb.RotateSecretRequest(
            secret_id="app/db",
            client_request_token=t,
            rotation_lambda_arn="random-value",
            rotation_rules=pb.RotationRules(automatically_after_days=7),
        )
    )
    assert (resp.arn, resp.name, resp.version_id) == (arn, "app/db", t)
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert stages(desc) == {first: ["AWSCURRENT"], t: ["AWSPENDING"]}
    assert desc.rotation_enabled is True
    assert desc.rotation_lambda_arn == "random-value"
    assert desc.rotation_rules.automatically_after_days == 7
    assert not desc.HasField("last_rotated_date")
    # The placeholder has no value: GetSecretValue fails, ListSecretVersionIds leaves it out.
    with pytest.raises(errors.NotFound):
        await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id=arn, version_stage="AWSPENDING"))
    listed = await stack.store.ListSecretVersionIds(pb.ListSecretVersionIdsRequest(secret_id=arn))
    assert [v.version_id for v in listed.versions] == [first]

    # A second RotateSecret while AWSPENDING is elsewhere: AWS's exact error, nothing written.
    with pytest.raises(errors.InvalidRequest) as e:
        await stack.store.RotateSecret(pb.RotateSecretRequest(client_request_token=token(), secret_id=arn))
    assert e.value.message == PENDING_MSG

    claimed = await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=10))
    assert [(j.secret_arn, j.token, j.rotator, j.rotate_immediately, j.try_number) for j in claimed.jobs] == [
        (arn, t, "random-value", True, 1)
    ]
    attempts = await stack.store.ListRotationAttempts(pb.ListRotationAttemptsRequest(secret_id=arn))
    assert [(a.version_id, a.status, a.tries) for a in attempts.attempts] == [(t, "Pending", 0)]


async def test_complete_rotation_moves_labels_and_dates(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, first = await make_secret(stack)
    t = token()
    await stack.store.RotateSecret(
        pb.RotateSecretRequest(
            secret_id=arn,
            client_request_token=t,
            rotation_lambda_arn="random-value",
            rotation_rules=pb.RotationRules(schedule_expression="rate(10 days)"),
        )
    )
    (job,) = (await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=10))).jobs
    stack.clock.advance(timedelta(seconds=5))
    completed_at = stack.clock.now()
    await run_steps(stack, control, job, worker="w1", new_value="v2")

    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert stages(desc) == {t: ["AWSCURRENT"], first: ["AWSPREVIOUS"]}
    assert abs(ts(desc.last_rotated_date) - completed_at) < timedelta(seconds=1)
    midnight = datetime.combine(completed_at.date(), datetime.min.time(), tzinfo=UTC)
    assert ts(desc.next_rotation_date) == midnight + timedelta(days=10)
    value = await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id=arn))
    assert (value.secret_string, value.version_id) == ("v2", t)
    # Nothing left to claim; a second completion is harmless; the history shows every step.
    assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=10))).jobs) == []
    await control.CompleteRotation(spb.CompleteRotationRequest(secret_arn=arn, token=t, worker_id="w1"))
    (attempt,) = (
        await stack.store.ListRotationAttempts(pb.ListRotationAttemptsRequest(secret_id=arn))
    ).attempts
    assert (attempt.status, attempt.tries, attempt.rotate_immediately) == ("Succeeded", 1, True)
    assert [(s.step, s.status, s.try_number) for s in attempt.steps] == [
        ("createSecret", "succeeded", 1),
        ("setSecret", "succeeded", 1),
        ("testSecret", "succeeded", 1),
        ("finishSecret", "succeeded", 1),
    ]
    assert not attempt.HasField("error")
    # Rotating again is allowed now (AWSPENDING is gone).
    again = await stack.store.RotateSecret(
        pb.RotateSecretRequest(client_request_token=token(), secret_id=arn)
    )
    assert again.version_id and again.version_id != t


async def test_complete_refused_before_finish_secret(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, _ = await make_secret(stack)
    t = (
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(), secret_id=arn, rotation_lambda_arn="random-value"
            )
        )
    ).version_id
    await control.AcquireRotationLease(
        spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id="w")
    )
    with pytest.raises(errors.InvalidRequest, match="finishSecret has not moved AWSCURRENT"):
        await control.CompleteRotation(spb.CompleteRotationRequest(secret_arn=arn, token=t, worker_id="w"))


async def test_leases_exclude_a_second_worker(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, _ = await make_secret(stack)
    t = (
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(), secret_id=arn, rotation_lambda_arn="random-value"
            )
        )
    ).version_id

    def acquire(worker: str) -> spb.AcquireRotationLeaseRequest:
        return spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id=worker, lease_seconds=30)

    first = await control.AcquireRotationLease(acquire("w1"))
    assert first.acquired and first.job.try_number == 1 and first.job.token == t
    second = await control.AcquireRotationLease(acquire("w2"))
    assert not second.acquired and "w1" in second.reason
    # The holder renews without starting a new try; the other worker may not record steps.
    renewed = await control.AcquireRotationLease(acquire("w1"))
    assert renewed.acquired and renewed.job.try_number == 1
    with pytest.raises(errors.InvalidRequest, match="does not hold the lease"):
        await control.RecordRotationStep(
            spb.RecordRotationStepRequest(
                secret_arn=arn, token=t, worker_id="w2", step="createSecret", status="started"
            )
        )
    # While the lease is live the attempt is not handed out again; once it expires, it is (crashed worker).
    assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs) == []
    stack.clock.advance(timedelta(seconds=31))
    (job,) = (await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs
    assert (job.token, job.try_number) == (t, 2)
    taken = await control.AcquireRotationLease(acquire("w2"))
    assert taken.acquired and taken.job.try_number == 2
    late = await control.AcquireRotationLease(acquire("w1"))
    assert not late.acquired


async def test_failed_tries_back_off_then_fail_with_the_reason(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, first = await make_secret(stack)
    t = (
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(), secret_id=arn, rotation_lambda_arn="random-value"
            )
        )
    ).version_id
    max_tries = stack.settings.rotation_max_tries
    base = stack.settings.rotation_backoff_base_seconds
    delays = []
    for n in range(1, max_tries + 1):
        (job,) = (await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs
        assert job.try_number == n
        lease = await control.AcquireRotationLease(
            spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id=f"w{n}")
        )
        assert lease.acquired
        await control.RecordRotationStep(
            spb.RecordRotationStepRequest(
                secret_arn=arn,
                token=t,
                worker_id=f"w{n}",
                step="setSecret",
                status="failed",
                error=f"boom {n}",
            )
        )
        outcome = await control.FailRotationTry(
            spb.FailRotationTryRequest(secret_arn=arn, token=t, worker_id=f"w{n}", error=f"boom {n}")
        )
        if n < max_tries:
            assert not outcome.final
            delays.append(outcome.next_try_seconds)
            # Not due before the back-off has passed (and a duplicate job is refused meanwhile).
            assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs) == []
            early = await control.AcquireRotationLease(
                spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id="dup")
            )
            assert not early.acquired and "next try" in early.reason
            stack.clock.advance(timedelta(seconds=outcome.next_try_seconds))
        else:
            assert outcome.final
    assert delays == [int(base * 2**i) for i in range(max_tries - 1)]
    (attempt,) = (
        await stack.store.ListRotationAttempts(pb.ListRotationAttemptsRequest(secret_id=arn))
    ).attempts
    assert (attempt.status, attempt.tries, attempt.error) == ("Failed", max_tries, f"boom {max_tries}")
    assert attempt.HasField("finished_date")
    assert [(s.try_number, s.status, s.error) for s in attempt.steps][-1] == (
        max_tries,
        "failed",
        f"boom {max_tries}",
    )
    # AWS: AWSCURRENT untouched, AWSPENDING stays, RotationEnabled stays, no LastRotatedDate.
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert stages(desc) == {first: ["AWSCURRENT"], t: ["AWSPENDING"]}
    assert desc.rotation_enabled and not desc.HasField("last_rotated_date")
    assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs) == []
    refused = await control.AcquireRotationLease(
        spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id="late")
    )
    assert not refused.acquired and "Failed" in refused.reason
    with pytest.raises(errors.InvalidRequest) as e:
        await stack.store.RotateSecret(pb.RotateSecretRequest(client_request_token=token(), secret_id=arn))
    assert e.value.message == PENDING_MSG
    # Cleaning AWSPENDING (as AWS tells you to) makes RotateSecret work again.
    await stack.store.UpdateSecretVersionStage(
        pb.UpdateSecretVersionStageRequest(
            secret_id=arn, version_stage="AWSPENDING", remove_from_version_id=t
        )
    )
    assert (
        await stack.store.RotateSecret(pb.RotateSecretRequest(client_request_token=token(), secret_id=arn))
    ).version_id


async def test_rotate_immediately_false_tests_on_a_temporary_copy(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, first = await make_secret(stack, value="current-value")
    resp = await stack.store.RotateSecret(
        pb.RotateSecretRequest(
            client_request_token=token(),
            secret_id=arn,
            rotation_lambda_arn="random-value",
            rotate_immediately=False,
            rotation_rules=pb.RotationRules(automatically_after_days=30),
        )
    )
    t = resp.version_id
    copy = await stack.store.GetSecretValue(
        pb.GetSecretValueRequest(secret_id=arn, version_stage="AWSPENDING")
    )
    assert (copy.version_id, copy.secret_string) == (t, "current-value")
    (job,) = (await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs
    assert not job.rotate_immediately
    await control.AcquireRotationLease(
        spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id="w")
    )
    for status in ("started", "succeeded"):
        await control.RecordRotationStep(
            spb.RecordRotationStepRequest(
                secret_arn=arn, token=t, worker_id="w", step="testSecret", status=status
            )
        )
    await control.CompleteRotation(spb.CompleteRotationRequest(secret_arn=arn, token=t, worker_id="w"))
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert stages(desc) == {first: ["AWSCURRENT"]}
    assert desc.rotation_enabled and not desc.HasField("last_rotated_date")
    assert desc.HasField("next_rotation_date")
    value = await stack.store.GetSecretValue(pb.GetSecretValueRequest(secret_id=arn))
    assert value.version_id == first
    (attempt,) = (
        await stack.store.ListRotationAttempts(pb.ListRotationAttemptsRequest(secret_id=arn))
    ).attempts
    assert (attempt.status, attempt.rotate_immediately) == ("Succeeded", False)


async def test_cancel_rotate_secret(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, first = await make_secret(stack)
    with pytest.raises(errors.InvalidRequest, match="never been configured for rotation"):
        await stack.store.CancelRotateSecret(pb.CancelRotateSecretRequest(secret_id=arn))
    t = (
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(),
                secret_id=arn,
                rotation_lambda_arn="random-value",
                rotation_rules=pb.RotationRules(schedule_expression="cron(0 8 * * ? *)", duration="2h"),
            )
        )
    ).version_id
    await control.AcquireRotationLease(
        spb.AcquireRotationLeaseRequest(secret_arn=arn, token=t, worker_id="w")
    )
    resp = await stack.store.CancelRotateSecret(pb.CancelRotateSecretRequest(secret_id=arn))
    assert (resp.arn, resp.version_id) == (arn, t)
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert desc.HasField("rotation_enabled") and desc.rotation_enabled is False
    assert desc.rotation_lambda_arn == "random-value"
    assert (desc.rotation_rules.schedule_expression, desc.rotation_rules.duration) == (
        "cron(0 8 * * ? *)",
        "2h",
    )
    assert stages(desc) == {first: ["AWSCURRENT"], t: ["AWSPENDING"]}  # the caller cleans up, as in AWS
    # The in-flight rotation stops: the worker loses its lease, nothing is handed out again.
    with pytest.raises(errors.InvalidRequest, match="Cancelled"):
        await control.RecordRotationStep(
            spb.RecordRotationStepRequest(
                secret_arn=arn, token=t, worker_id="w", step="createSecret", status="started"
            )
        )
    assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs) == []
    (attempt,) = (
        await stack.store.ListRotationAttempts(pb.ListRotationAttemptsRequest(secret_id=arn))
    ).attempts
    assert attempt.status == "Cancelled"
    listed = await stack.store.ListSecrets(pb.ListSecretsRequest())
    assert listed.secret_list[0].rotation_enabled is False


async def test_scheduled_rotation_starts_inside_the_window_only(
    stack: StoreStack, control: store_pb2_grpc.RotationControlServiceStub
) -> None:
    arn, _ = await make_secret(stack)
    t = (
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(),
                secret_id=arn,
                rotation_lambda_arn="random-value",
                rotation_rules=pb.RotationRules(schedule_expression="rate(1 day)", duration="2h"),
            )
        )
    ).version_id
    (job,) = (await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs
    assert job.token == t
    await run_steps(stack, control, job, worker="w", new_value="v2")
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    nxt = ts(desc.next_rotation_date)
    assert nxt > stack.clock.now() and (nxt.hour, nxt.minute) == (0, 0)
    # Before the window: nothing.
    stack.clock.advance(nxt - stack.clock.now() - timedelta(minutes=1))
    assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs) == []
    # After the 2-hour window closed unclaimed: no rotation, the next window is the following day.
    stack.clock.advance(timedelta(hours=3))
    assert list((await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs) == []
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert ts(desc.next_rotation_date) == nxt + timedelta(days=1)
    assert (
        len((await stack.store.ListRotationAttempts(pb.ListRotationAttemptsRequest(secret_id=arn))).attempts)
        == 1
    )
    # Inside that window (00:30): the store starts an attempt by itself and hands out its job.
    stack.clock.advance(nxt + timedelta(days=1, minutes=30) - stack.clock.now())
    jobs = (await control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=5))).jobs
    assert [(j.secret_arn, j.try_number, j.rotate_immediately) for j in jobs] == [(arn, 1, True)]
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert stages(desc)[jobs[0].token] == ["AWSPENDING"]
    await run_steps(stack, control, jobs[0], worker="w", new_value="v3")
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert ts(desc.next_rotation_date) == nxt + timedelta(days=2)
    history = await stack.store.ListRotationAttempts(
        pb.ListRotationAttemptsRequest(secret_id=arn, max_results=1)
    )
    assert [a.version_id for a in history.attempts] == [jobs[0].token] and history.next_token
    older = await stack.store.ListRotationAttempts(
        pb.ListRotationAttemptsRequest(secret_id=arn, max_results=1, next_token=history.next_token)
    )
    assert [a.version_id for a in older.attempts] == [t]
    assert not older.HasField("next_token")


async def test_manual_value_change_counts_as_rotation_for_days_rules(stack: StoreStack) -> None:
    arn, _ = await make_secret(stack)
    await stack.store.RotateSecret(
        pb.RotateSecretRequest(
            client_request_token=token(),
            secret_id=arn,
            rotation_lambda_arn="random-value",
            rotate_immediately=False,
            rotation_rules=pb.RotationRules(automatically_after_days=2),
        )
    )
    before = ts(
        (await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))).next_rotation_date
    )
    stack.clock.advance(timedelta(days=1))
    await stack.store.PutSecretValue(
        pb.PutSecretValueRequest(secret_id=arn, client_request_token=token(), secret_string="manual")
    )
    after = ts((await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))).next_rotation_date)
    assert after == before + timedelta(days=1)


async def test_rotation_functions_registry(stack: StoreStack) -> None:
    reg = await stack.store.RegisterRotationFunction(
        pb.RegisterRotationFunctionRequest(name="my-rotator", endpoint="127.0.0.1:9999")
    )
    fn_arn = "arn:aws:lambda:local-1:000000000000:function:my-rotator"
    assert (reg.function.arn, reg.function.name, reg.function.endpoint) == (
        fn_arn,
        "my-rotator",
        "127.0.0.1:9999",
    )
    with pytest.raises(errors.AlreadyExists):
        await stack.store.RegisterRotationFunction(
            pb.RegisterRotationFunctionRequest(name="my-rotator", endpoint="127.0.0.1:1")
        )
    with pytest.raises(errors.Validation):
        await stack.store.RegisterRotationFunction(
            pb.RegisterRotationFunctionRequest(name="bad name!", endpoint="nohostport")
        )
    listed = await stack.store.ListRotationFunctions(pb.ListRotationFunctionsRequest())
    assert [f.arn for f in listed.functions] == [fn_arn]
    arn, _ = await make_secret(stack)
    await stack.store.RotateSecret(
        pb.RotateSecretRequest(client_request_token=token(), secret_id=arn, rotation_lambda_arn=fn_arn)
    )
    with pytest.raises(errors.InvalidRequest, match="still the rotator"):
        await stack.store.DeleteRotationFunction(pb.DeleteRotationFunctionRequest(function_id="my-rotator"))
    await stack.store.DeleteSecret(pb.DeleteSecretRequest(secret_id=arn, force_delete_without_recovery=True))
    await stack.store.DeleteRotationFunction(pb.DeleteRotationFunctionRequest(function_id=fn_arn))
    assert list((await stack.store.ListRotationFunctions(pb.ListRotationFunctionsRequest())).functions) == []
    with pytest.raises(errors.NotFound):
        await stack.store.DeleteRotationFunction(pb.DeleteRotationFunctionRequest(function_id="my-rotator"))


async def test_control_service_is_for_the_rotation_identity_only(stack: StoreStack) -> None:
    gateway_control = store_pb2_grpc.RotationControlServiceStub(
        secure_channel(
            f"127.0.0.1:{stack.store_runtime.port}",
            TlsFiles.for_identity(stack.settings.pki_dir, "gateway"),
            server_name="store",
        )
    )
    with pytest.raises(errors.AccessDenied):
        await gateway_control.ClaimDueRotations(spb.ClaimDueRotationsRequest(limit=1))


async def test_bad_rules_are_refused_without_writing(stack: StoreStack) -> None:
    arn, _ = await make_secret(stack)
    with pytest.raises(errors.InvalidParameter) as e:
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(),
                secret_id=arn,
                rotation_lambda_arn="random-value",
                rotation_rules=pb.RotationRules(
                    automatically_after_days=3, schedule_expression="rate(3 days)"
                ),
            )
        )
    assert e.value.message == "You cannot specify both rotation frequency and schedule expression together."
    with pytest.raises(errors.InvalidParameter, match="at most every 4 hours"):
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(
                client_request_token=token(),
                secret_id=arn,
                rotation_lambda_arn="random-value",
                rotation_rules=pb.RotationRules(schedule_expression="rate(2 hours)"),
            )
        )
    assert await stack.db.fetchval("SELECT count(*) FROM store.rotation_attempts") == 0
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert not desc.HasField("rotation_enabled")


async def test_rotate_secret_without_token_is_refused_before_the_lookup(stack: StoreStack) -> None:
    """AWS: RotateSecret without a ClientRequestToken is InvalidParameterException (not InvalidRequest as for
    the other writes), decided before the secret is looked up: a secret that does not exist answers it too,
    not ResourceNotFoundException. Nothing is configured or started."""
    message = "You must provide a ClientRequestToken value. We recommend a UUID-type value."
    arn, _ = await make_secret(stack)
    for secret_id in (
        arn,
        "app/db",
        "no/such-secret",
        "arn:aws:secretsmanager:local-1:000000000000:secret:x",
    ):
        with pytest.raises(errors.InvalidParameter) as e:
            await stack.store.RotateSecret(
                pb.RotateSecretRequest(secret_id=secret_id, rotation_lambda_arn="random-value")
            )
        assert (e.value.code, e.value.message) == ("InvalidParameterException", message)
    desc = await stack.store.DescribeSecret(pb.DescribeSecretRequest(secret_id=arn))
    assert not desc.HasField("rotation_enabled")
    assert await stack.db.fetchval("SELECT count(*) FROM store.rotation_attempts") == 0
    # With a token the same call rotates, and the token is the pending version's id.
    t = token()
    resp = await stack.store.RotateSecret(
        pb.RotateSecretRequest(secret_id=arn, client_request_token=t, rotation_lambda_arn="random-value")
    )
    assert resp.version_id == t
    with pytest.raises(errors.NotFound):
        await stack.store.RotateSecret(
            pb.RotateSecretRequest(secret_id="no/such-secret", client_request_token=token())
        )
