"""Client retries (``coffer.client.retry``), AWS standard mode: which errors are retried for which
operations, full-jitter delays bounded by ``min(20 s, base * 2^(n-1))``, attempts counted, the retry quota;
and the sync and async clients' loops over a fake channel: one ``client_request_token`` for every attempt,
each attempt signed afresh, non-retryable errors raised after one attempt, an expired session refreshed once
on top; the settings (env, profile)."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.cli.main import EXIT_CONFIG, build_parser, main
from coffer.cli.main import _client as cli_client
from coffer.client import _ops
from coffer.client.aio import _AsyncService
from coffer.client.credentials import Credentials
from coffer.client.profile import ConfigurationError, resolve_connection
from coffer.client.retry import (
    MAX_BACKOFF_SECONDS,
    QUOTA_CAPACITY,
    RETRY_COST,
    TIMEOUT_RETRY_COST,
    DeadlineExceeded,
    RetryPolicy,
    RetryQuota,
    is_retryable,
)
from coffer.client.sync import CofferClient, _SyncService
from coffer.core import errors
from coffer.crypto.signing import EXPIRED_TOKEN_CODE
from coffer.rpc.status import to_status

READ, WRITE = "GetSecretValue", "PutSecretValue"

RETRY_TABLE: list[tuple[errors.CofferError, str, bool]] = [
    (errors.Unavailable(), WRITE, True),
    (_ops.EndpointUnreachable("no route"), WRITE, True),
    (errors.KmsSealed(), READ, True),
    (errors.Throttling(), WRITE, True),
    (errors.Aborted(), WRITE, True),
    (DeadlineExceeded("late"), READ, True),
    (DeadlineExceeded("late"), "DescribeSecret", True),
    (DeadlineExceeded("late"), "ListSecretVersionIds", True),
    (DeadlineExceeded("late"), "BatchGetSecretValue", True),
    (DeadlineExceeded("late"), WRITE, False),  # may have been applied
    (DeadlineExceeded("late"), "DeleteSecret", False),
    (errors.NotFound(), READ, False),
    (errors.AccessDenied(), READ, False),
    (errors.Unauthenticated(), READ, False),
    (errors.Validation(), WRITE, False),
    (errors.InvalidParameter(), WRITE, False),
    (errors.InvalidRequest(), WRITE, False),
    (errors.LimitExceeded(), WRITE, False),
    (errors.AlreadyExists(), "CreateSecret", False),
    (errors.DecryptionFailure(), READ, False),
    (errors.Internal(), READ, False),
]


@pytest.mark.parametrize(("error", "operation", "retry"), RETRY_TABLE, ids=lambda v: str(v)[:40])
def test_which_errors_are_retried(error: errors.CofferError, operation: str, retry: bool) -> None:
    assert is_retryable(error, operation) is retry
    run = RetryPolicy(random=lambda: 0.5).start(operation)
    assert (run.next_delay(error) is not None) is retry


def rpc_error(code: grpc.StatusCode, details: str = "", error: errors.CofferError | None = None) -> Any:
    """A gRPC failure: a Coffer service's (``error`` in its trailers) or gRPC's own (no details)."""
    trailers = grpc.aio.Metadata()
    if error is not None:
        code, details, rich = to_status(error)
        trailers = grpc.aio.Metadata(*rich)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=details)


def test_grpc_failures_that_reached_no_coffer_service() -> None:
    S = grpc.StatusCode
    unreachable = _ops.map_rpc_error(rpc_error(S.UNAVAILABLE, "connection refused"), "h:1", READ)
    assert isinstance(unreachable, _ops.EndpointUnreachable)
    late = _ops.map_rpc_error(rpc_error(S.DEADLINE_EXCEEDED, "Deadline Exceeded"), "h:1", READ)
    assert isinstance(late, DeadlineExceeded) and late.code == "ServiceUnavailable"
    assert is_retryable(late, READ) and not is_retryable(late, WRITE)
    big = _ops.map_rpc_error(
        rpc_error(S.RESOURCE_EXHAUSTED, "Received message larger than max"), "h:1", WRITE
    )
    assert isinstance(big, errors.Validation) and not is_retryable(big, WRITE)
    overload = _ops.map_rpc_error(
        rpc_error(S.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"), "h:1", READ
    )
    assert isinstance(overload, errors.Throttling) and is_retryable(overload, READ)
    # What the services answered keeps its own kind.
    throttled = _ops.map_rpc_error(rpc_error(S.OK, error=errors.Throttling("Rate exceeded.")), "h:1", READ)
    assert type(throttled) is errors.Throttling and throttled.code == "ThrottlingException"
    dependency = _ops.map_rpc_error(rpc_error(S.OK, error=errors.Unavailable()), "h:1", WRITE)
    assert type(dependency) is errors.Unavailable and is_retryable(dependency, WRITE)
    missing = _ops.map_rpc_error(rpc_error(S.OK, error=errors.NotFound()), "h:1", READ)
    assert isinstance(missing, errors.NotFound) and not is_retryable(missing, READ)


def test_delays_are_full_jitter_bounded_by_the_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=50, random=random.Random(13).random, quota=None)
    unavailable, throttled = errors.Unavailable(), errors.Throttling()
    for n in range(1, 40):
        for error, base in ((unavailable, 0.1), (throttled, 0.5)):
            cap = min(MAX_BACKOFF_SECONDS, base * 2 ** (n - 1))
            delays = {policy.delay(n, error) for _ in range(20)}
            assert all(0 <= d <= cap for d in delays)
            assert len(delays) > 1  # jittered, not fixed
    assert RetryPolicy(random=lambda: 1.0).delay(1, unavailable) == pytest.approx(0.1)
    assert RetryPolicy(random=lambda: 1.0).delay(3, unavailable) == pytest.approx(0.4)
    assert RetryPolicy(random=lambda: 1.0).delay(2, throttled) == pytest.approx(1.0)
    assert RetryPolicy(random=lambda: 1.0).delay(30, unavailable) == MAX_BACKOFF_SECONDS
    assert RetryPolicy(random=lambda: 0.0).delay(5, unavailable) == 0.0
    seeded = [RetryPolicy(random=random.Random(7).random).delay(2, unavailable) for _ in range(2)]
    assert seeded[0] == seeded[1]  # the same seed, the same delays


def test_attempts_are_counted_up_to_max_attempts() -> None:
    for max_attempts in (1, 2, 3, 5):
        run = RetryPolicy(max_attempts=max_attempts, random=lambda: 0.5).start(READ)
        delays = [run.next_delay(errors.Unavailable()) for _ in range(max_attempts)]
        assert delays[-1] is None and None not in delays[:-1]
        assert run.attempts == max_attempts
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="retry_mode"):
        RetryPolicy(mode="adaptive")


def test_retry_quota_is_drawn_on_and_refunded() -> None:
    quota = RetryQuota()
    policy = RetryPolicy(random=lambda: 0.0, quota=quota)
    run = policy.start(READ)
    assert run.next_delay(DeadlineExceeded("late")) == 0.0
    assert quota.available == QUOTA_CAPACITY - TIMEOUT_RETRY_COST
    run.succeeded()  # gives back what the last retry took
    assert quota.available == QUOTA_CAPACITY
    assert run.attempts == 2
    # An empty bucket: no more retries, the error is raised.
    while quota.acquire(RETRY_COST):
        pass
    assert quota.available < RETRY_COST
    assert policy.start(READ).next_delay(errors.Unavailable()) is None
    before = quota.available
    policy.start(READ).succeeded()  # a first-try success adds 1
    assert quota.available == before + 1


# --- the clients' loops over a fake channel -------------------------------------------------------------


class FakeChannel:
    """``unary_unary`` gives a callable answering each call with the next outcome (an exception is raised);
    every request and its metadata are recorded."""

    def __init__(self, outcomes: list[Message | BaseException], *, aio: bool = False) -> None:
        self.outcomes = outcomes
        self.aio = aio
        self.calls: list[tuple[Message, Any]] = []

    def unary_unary(self, path: str, **_: Any) -> Callable[..., Any]:
        def answer(msg: Message, *, timeout: float, metadata: Any) -> Message:
            self.calls.append((msg, metadata))
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        async def answer_async(msg: Message, **kw: Any) -> Message:
            return answer(msg, **kw)

        return answer_async if self.aio else answer


class CountingCredentials:
    def __init__(self) -> None:
        self.asked = 0

    def __call__(self) -> Credentials:
        self.asked += 1
        return Credentials("AKIAEXAMPLE", "secret")


OK_PUT = sm.PutSecretValueResponse(name="db/prod", version_id="v1")
UNAVAILABLE = rpc_error(grpc.StatusCode.OK, error=errors.Unavailable())


def sync_service(channel: FakeChannel, policy: RetryPolicy, creds: CountingCredentials) -> _SyncService:
    return _SyncService(channel, _ops.SECRETS, 5.0, "h:1", creds, policy)


def test_sync_retry_reuses_the_token_and_signs_each_attempt() -> None:
    slept: list[float] = []
    channel = FakeChannel([UNAVAILABLE, rpc_error(grpc.StatusCode.UNAVAILABLE, "reset"), OK_PUT])
    creds = CountingCredentials()
    policy = RetryPolicy(random=random.Random(1).random, sleep=slept.append)
    service = sync_service(channel, policy, creds)
    assert service.call("PutSecretValue", secret_id="db/prod", secret_string="v") == OK_PUT
    tokens = {msg.client_request_token for msg, _ in channel.calls}  # type: ignore[attr-defined]
    assert len(channel.calls) == 3 and len(tokens) == 1 and "" not in tokens
    assert creds.asked == 3 and all(meta for _, meta in channel.calls)  # signed for every attempt
    assert len(slept) == 2 and 0 <= slept[0] <= 0.1 and 0 <= slept[1] <= 0.2
    # A second logical call gets a token of its own.
    channel.outcomes.append(OK_PUT)
    service.call("PutSecretValue", secret_id="db/prod", secret_string="w")
    assert channel.calls[-1][0].client_request_token not in tokens  # type: ignore[attr-defined]


def test_sync_gives_up_after_max_attempts_and_never_retries_the_rest() -> None:
    slept: list[float] = []
    channel = FakeChannel([UNAVAILABLE] * 3)
    service = sync_service(channel, RetryPolicy(sleep=slept.append), CountingCredentials())
    with pytest.raises(errors.Unavailable):
        service.call("GetSecretValue", secret_id="x")
    assert len(channel.calls) == 3 and len(slept) == 2

    for failure in (errors.NotFound(), errors.AccessDenied(), errors.Validation(), errors.InvalidRequest()):
        channel = FakeChannel([rpc_error(grpc.StatusCode.OK, error=failure)])
        service = sync_service(channel, RetryPolicy(sleep=slept.append), CountingCredentials())
        with pytest.raises(type(failure)):
            service.call("GetSecretValue", secret_id="x")
        assert len(channel.calls) == 1

    channel = FakeChannel([UNAVAILABLE])
    service = sync_service(channel, RetryPolicy(max_attempts=1, sleep=slept.append), CountingCredentials())
    with pytest.raises(errors.Unavailable):
        service.call("GetSecretValue", secret_id="x")
    assert len(channel.calls) == 1 and len(slept) == 2


async def test_async_retry_reuses_the_token_and_refreshes_an_expired_session_once() -> None:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    class Refreshing(CountingCredentials):
        expired_seen = 0

        async def current(self) -> Credentials:
            return self()

        async def expired(self, used: Credentials) -> None:
            self.expired_seen += 1

    expired = rpc_error(grpc.StatusCode.OK, error=errors.Unauthenticated(code=EXPIRED_TOKEN_CODE))
    channel = FakeChannel([expired, rpc_error(grpc.StatusCode.ABORTED, "conflict"), OK_PUT], aio=True)
    creds = Refreshing()
    policy = RetryPolicy(max_attempts=2, random=lambda: 0.5, async_sleep=sleep)
    service = _AsyncService(channel, _ops.SECRETS, 5.0, "h:1", creds, policy)
    assert await service.call("PutSecretValue", secret_id="db/prod", secret_string="v") == OK_PUT
    tokens = {msg.client_request_token for msg, _ in channel.calls}  # type: ignore[attr-defined]
    assert len(channel.calls) == 3 and len(tokens) == 1
    assert creds.expired_seen == 1 and creds.asked == 3
    assert slept == [0.05]  # the refresh is not a retry: only the conflict waited

    channel = FakeChannel([expired, expired], aio=True)
    service = _AsyncService(channel, _ops.SECRETS, 5.0, "h:1", Refreshing(), policy)
    with pytest.raises(errors.Unauthenticated):
        await service.call("GetSecretValue", secret_id="x")
    assert len(channel.calls) == 2  # refreshed once, then raised (not retryable)


def test_max_attempts_and_retry_mode_from_env_and_profile(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(
        '{"endpoint": "h:1", "ca_file": "ca.crt", "max_attempts": 5, "retry_mode": "standard"}'
    )
    env = {"COFFER_PROFILE": str(profile)}
    conn = resolve_connection(env=env)
    assert conn.max_attempts == 5 and conn.retry_mode == "standard"
    assert resolve_connection(env={**env, "COFFER_MAX_ATTEMPTS": "1"}).max_attempts == 1
    assert _ops.retry_policy(None, conn.max_attempts, conn.retry_mode).max_attempts == 5
    assert _ops.retry_policy(None, None, None).max_attempts == 3
    for bad in ("0", "three", "-1"):
        with pytest.raises(ConfigurationError, match="COFFER_MAX_ATTEMPTS"):
            resolve_connection(env={**env, "COFFER_MAX_ATTEMPTS": bad})
    with pytest.raises(ConfigurationError, match="COFFER_RETRY_MODE"):
        resolve_connection(env={**env, "COFFER_RETRY_MODE": "adaptive"})
    profile.write_text('{"endpoint": "h:1", "ca_file": "ca.crt", "max_attempts": 0}')
    with pytest.raises(ConfigurationError, match="max_attempts"):
        resolve_connection(env=env)


def test_clients_and_cli_take_their_retry_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.crt").write_text("")  # grpc accepts an empty root set at construction
    profile = tmp_path / "profile.json"
    doc = {"endpoint": "127.0.0.1:9", "ca_file": "ca.crt", "region": "local-1", "max_attempts": 4}
    profile.write_text(
        json.dumps(
            {**doc, "regions": {"local-1": {}, "local-2": {"endpoint": "127.0.0.1:10", "ca_file": "ca.crt"}}}
        )
    )
    with CofferClient.from_profile(profile) as client:
        assert client._retry.max_attempts == 4
        # One policy, one retry quota, for every service of the client.
        assert all(s._retry is client._retry for s in (client.kms, client.iam, client.sts, client.audit))
    with CofferClient.from_profile(profile, region="local-2") as client:
        assert client._retry.max_attempts == 4
    with CofferClient.from_profile(profile, max_attempts=1) as client:
        assert client._retry.max_attempts == 1  # an argument wins
    env = {"COFFER_PROFILE": str(profile), "COFFER_MAX_ATTEMPTS": "2"}
    with CofferClient.from_env(env) as client:
        assert client._retry.max_attempts == 2
    with CofferClient("127.0.0.1:9", tmp_path / "ca.crt", None) as client:
        assert client._retry.max_attempts == 3 and client._retry.mode == "standard"

    monkeypatch.setenv("COFFER_MAX_ATTEMPTS", "7")
    with cli_client(
        build_parser().parse_args(["secretsmanager", "list-secrets", "--profile", str(profile)])
    ) as c:
        assert c._retry.max_attempts == 7
    monkeypatch.setenv("COFFER_MAX_ATTEMPTS", "0")
    out, err = io.StringIO(), io.StringIO()
    assert (
        main(["secretsmanager", "list-secrets", "--profile", str(profile)], stdout=out, stderr=err)
        == EXIT_CONFIG
    )
    assert "COFFER_MAX_ATTEMPTS" in err.getvalue()
