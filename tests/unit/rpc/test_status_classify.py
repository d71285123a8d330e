"""The one status mapping: failures that are the world's fault (a lost, refused or timed-out connection to
PostgreSQL, Redis or another service, a failover, a serialization failure or deadlock) map to a retryable
status, UNAVAILABLE or ABORTED, never INTERNAL; a bug stays INTERNAL; a CofferError keeps its own kind."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.exceptions as redis_errors
from asyncpg import exceptions as pg

from coffer.core import errors
from coffer.rpc.status import classify, from_rpc_error, to_status

UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "ServiceUnavailable")
ABORTED = (grpc.StatusCode.ABORTED, "TransactionConflict")
INTERNAL = (grpc.StatusCode.INTERNAL, "InternalServiceError")


class _RpcError(grpc.aio.AioRpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="downstream said no")


CASES: list[tuple[str, BaseException, tuple[grpc.StatusCode, str]]] = [
    # PostgreSQL through asyncpg
    (
        "asyncpg connection left mid-operation by a server restart",
        pg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        UNAVAILABLE,
    ),
    ("asyncpg client bug of another kind", pg.InternalClientError("unexpected"), INTERNAL),
    ("pg connection error", pg.PostgresConnectionError("lost"), UNAVAILABLE),
    ("pg connection does not exist", pg.ConnectionDoesNotExistError("closed mid-operation"), UNAVAILABLE),
    ("pg connection failure", pg.ConnectionFailureError("08006"), UNAVAILABLE),
    ("pg client cannot connect", pg.ClientCannotConnectError("08001"), UNAVAILABLE),
    ("pg cannot connect now", pg.CannotConnectNowError("starting up"), UNAVAILABLE),
    ("pg admin shutdown", pg.AdminShutdownError("terminating connection"), UNAVAILABLE),
    ("pg crash shutdown", pg.CrashShutdownError("crash"), UNAVAILABLE),
    ("pg statement timeout", pg.QueryCanceledError("statement timeout"), UNAVAILABLE),
    ("pg too many connections", pg.TooManyConnectionsError("too many clients"), UNAVAILABLE),
    ("pg connection closed", asyncpg.InterfaceError("connection is closed"), UNAVAILABLE),
    ("pg pool closing", asyncpg.InterfaceError("pool is closing"), UNAVAILABLE),
    ("pg serialization failure", pg.SerializationError("could not serialize"), ABORTED),
    ("pg deadlock", pg.DeadlockDetectedError("deadlock detected"), ABORTED),
    ("pg lock not available", pg.LockNotAvailableError("lock timeout"), ABORTED),
    (
        "pg transaction on a closed connection",
        asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
        UNAVAILABLE,
    ),
    (
        "pg connection used after release (a bug)",
        asyncpg.InterfaceError(
            "cannot call Connection.fetch(): connection has been released back to the pool"
        ),
        INTERNAL,
    ),
    ("pg misuse of a connection", asyncpg.InterfaceError("another operation is in progress"), INTERNAL),
    ("pg unique violation", pg.UniqueViolationError("duplicate key"), INTERNAL),
    ("pg syntax error", pg.PostgresSyntaxError("syntax"), INTERNAL),
    # Redis
    ("redis connection error", redis_errors.ConnectionError("refused"), UNAVAILABLE),
    ("redis timeout", redis_errors.TimeoutError("timed out"), UNAVAILABLE),
    ("redis loading", redis_errors.BusyLoadingError("loading the dataset"), UNAVAILABLE),
    ("redis read-only replica (failover)", redis_errors.ReadOnlyError("READONLY"), UNAVAILABLE),
    ("redis wrong type", redis_errors.ResponseError("WRONGTYPE"), INTERNAL),
    # The network and timeouts
    ("connection refused", ConnectionRefusedError(errno.ECONNREFUSED, "refused"), UNAVAILABLE),
    ("connection reset", ConnectionResetError(errno.ECONNRESET, "reset"), UNAVAILABLE),
    ("broken pipe", BrokenPipeError(errno.EPIPE, "broken pipe"), UNAVAILABLE),
    ("host unreachable", OSError(errno.EHOSTUNREACH, "no route to host"), UNAVAILABLE),
    ("name resolution", socket.gaierror(socket.EAI_AGAIN, "temporary failure"), UNAVAILABLE),
    ("timeout", TimeoutError(), UNAVAILABLE),
    ("file not found", FileNotFoundError(errno.ENOENT, "missing"), INTERNAL),
    # Another service, raw
    ("downstream unavailable", _RpcError(grpc.StatusCode.UNAVAILABLE), UNAVAILABLE),
    ("downstream deadline", _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED), UNAVAILABLE),
    ("downstream aborted", _RpcError(grpc.StatusCode.ABORTED), ABORTED),
    ("downstream bug", _RpcError(grpc.StatusCode.INTERNAL), INTERNAL),
    ("downstream refusal", _RpcError(grpc.StatusCode.PERMISSION_DENIED), INTERNAL),
    # Another service, rebuilt by the client channel: its kind is already right
    ("rebuilt unavailable", from_rpc_error(_RpcError(grpc.StatusCode.UNAVAILABLE)), UNAVAILABLE),
    ("rebuilt deadline", from_rpc_error(_RpcError(grpc.StatusCode.DEADLINE_EXCEEDED)), UNAVAILABLE),
    ("rebuilt aborted", from_rpc_error(_RpcError(grpc.StatusCode.ABORTED)), ABORTED),
    # Our own errors and bugs
    ("coffer unavailable", errors.Unavailable(), UNAVAILABLE),
    ("coffer aborted", errors.Aborted(), ABORTED),
    ("coffer not found", errors.NotFound(), (grpc.StatusCode.NOT_FOUND, "ResourceNotFoundException")),
    ("a bug", KeyError("x"), INTERNAL),
    ("another bug", RuntimeError("x"), INTERNAL),
]


def _raised_while_handling(first: BaseException, second: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise second  # noqa: B904 - the implicit __context__ is what is tested
    except BaseException as exc:
        return exc


CASES += [
    (
        "clean-up error after a lost connection",
        _raised_while_handling(pg.AdminShutdownError("terminating"), RuntimeError("cannot roll back")),
        UNAVAILABLE,
    ),
    ("bug after a bug", _raised_while_handling(KeyError("a"), RuntimeError("b")), INTERNAL),
]


@pytest.mark.parametrize(("exc", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_exception_maps_to_its_status_and_aws_error_name(
    exc: BaseException, expected: tuple[grpc.StatusCode, str]
) -> None:
    code, _message, _trailers = to_status(exc)
    assert (code, classify(exc).code) == expected


def test_a_coffer_error_is_its_own_classification() -> None:
    err = errors.InvalidRequest("no")
    assert classify(err) is err


def test_a_dependency_failure_names_the_dependency_but_not_the_driver_text() -> None:
    err = classify(pg.AdminShutdownError("terminating connection due to administrator command on db secret"))
    assert isinstance(err, errors.Unavailable)
    assert "PostgreSQL" in err.message
    assert "secret" not in err.message
    conflict = classify(pg.SerializationError("could not serialize access"))
    assert isinstance(conflict, errors.Aborted)
    assert "PostgreSQL" in conflict.message


def test_aborted_travels_between_services() -> None:
    code, message, trailers = to_status(errors.Aborted())

    class Received(grpc.aio.AioRpcError):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=message)

    rebuilt = from_rpc_error(Received())
    assert isinstance(rebuilt, errors.Aborted)
    assert rebuilt.code == "TransactionConflict"


async def test_asyncpg_connecting_to_a_stopped_server_is_unavailable_but_a_missing_file_is_a_bug(
    tmp_path: Path,
) -> None:
    """A stopped PostgreSQL's Unix socket is gone: asyncpg's connect raises FileNotFoundError (ENOENT), which
    is the world's fault there; the same error anywhere else (a missing file of ours) stays a bug."""
    with pytest.raises(OSError) as down:
        await asyncpg.connect(f"postgresql://postgres@/postgres?host={tmp_path}&port=5999", timeout=5)
    assert isinstance(down.value, FileNotFoundError)
    err = classify(down.value)
    assert isinstance(err, errors.Unavailable) and "PostgreSQL" in err.message
    with pytest.raises(FileNotFoundError) as ours:
        (tmp_path / "missing").read_bytes()  # a plain missing file, outside asyncpg
    assert isinstance(classify(ours.value), errors.Internal)
