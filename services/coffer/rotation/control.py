"""The store's internal ``RotationControlService`` as the scheduler and workers use it (bookkeeping in
PostgreSQL: attempts, leases, steps, outcomes). Calls go over the rotation service's mTLS channel and raise
CofferErrors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from coffer.api.store.v1 import store_pb2, store_pb2_grpc

CALL_TIMEOUT_SECONDS = 15.0


class DueRotations(Protocol):
    """What the scheduler needs from the store."""

    async def claim_due(self, *, limit: int) -> list[store_pb2.RotationJob]: ...

    def watch_requests(self) -> AsyncIterator[None]:
        """Yield once when the watch opens, then whenever a rotation is requested; ends (or raises) when the
        stream breaks."""
        ...


class RotationControl(Protocol):
    async def claim_due(self, *, limit: int) -> list[store_pb2.RotationJob]: ...

    async def acquire_lease(
        self, job: store_pb2.RotationJob, *, worker_id: str, lease_seconds: int
    ) -> store_pb2.AcquireRotationLeaseResponse: ...

    async def record_step(
        self, job: store_pb2.RotationJob, *, worker_id: str, step: str, status: str, error: str | None = None
    ) -> None: ...

    async def complete(self, job: store_pb2.RotationJob, *, worker_id: str) -> None: ...

    async def fail_try(
        self, job: store_pb2.RotationJob, *, worker_id: str, error: str
    ) -> store_pb2.FailRotationTryResponse: ...


class StoreRotationControl:
    """``RotationControl`` over gRPC to the store."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        self._stub = store_pb2_grpc.RotationControlServiceStub(channel)
        self._timeout = timeout

    async def claim_due(self, *, limit: int) -> list[store_pb2.RotationJob]:
        reply = await self._stub.ClaimDueRotations(
            store_pb2.ClaimDueRotationsRequest(limit=limit), timeout=self._timeout
        )
        return list(reply.jobs)

    async def watch_requests(self) -> AsyncIterator[None]:
        call = self._stub.WatchRotationRequests(store_pb2.WatchRotationRequestsRequest())
        try:
            async for _wake in call:
                yield None
        finally:
            call.cancel()

    async def acquire_lease(
        self, job: store_pb2.RotationJob, *, worker_id: str, lease_seconds: int
    ) -> store_pb2.AcquireRotationLeaseResponse:
        reply: store_pb2.AcquireRotationLeaseResponse = await self._stub.AcquireRotationLease(
            store_pb2.AcquireRotationLeaseRequest(
                secret_arn=job.secret_arn, token=job.token, worker_id=worker_id, lease_seconds=lease_seconds
            ),
            timeout=self._timeout,
        )
        return reply

    async def record_step(
        self, job: store_pb2.RotationJob, *, worker_id: str, step: str, status: str, error: str | None = None
    ) -> None:
        request = store_pb2.RecordRotationStepRequest(
            secret_arn=job.secret_arn, token=job.token, worker_id=worker_id, step=step, status=status
        )
        if error is not None:
            request.error = error
        await self._stub.RecordRotationStep(request, timeout=self._timeout)

    async def complete(self, job: store_pb2.RotationJob, *, worker_id: str) -> None:
        await self._stub.CompleteRotation(
            store_pb2.CompleteRotationRequest(
                secret_arn=job.secret_arn, token=job.token, worker_id=worker_id
            ),
            timeout=self._timeout,
        )

    async def fail_try(
        self, job: store_pb2.RotationJob, *, worker_id: str, error: str
    ) -> store_pb2.FailRotationTryResponse:
        reply: store_pb2.FailRotationTryResponse = await self._stub.FailRotationTry(
            store_pb2.FailRotationTryRequest(
                secret_arn=job.secret_arn, token=job.token, worker_id=worker_id, error=error
            ),
            timeout=self._timeout,
        )
        return reply
