"""gRPC ⇄ domain for ``coffer.api.kms.v1.SealService`` (operators, through the gateway only)."""

from __future__ import annotations

from typing import Any

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.kms.seal import Seal, SealStatus

SERVICE_NAME = kms_pb2.DESCRIPTOR.services_by_name["SealService"].full_name


def seal_status(status: SealStatus) -> kms_pb2.SealStatus:
    return kms_pb2.SealStatus(
        mode=status.mode.value,
        initialized=status.initialized,
        sealed=status.sealed,
        threshold=status.threshold,
        shares=status.shares,
        progress=status.progress,
        root_key_id=status.root_key_id,
    )


class SealServicer(kms_pb2_grpc.SealServiceServicer):
    def __init__(self, seal: Seal) -> None:
        self._seal = seal

    async def OperatorInit(
        self, request: kms_pb2.OperatorInitRequest, context: Any
    ) -> kms_pb2.OperatorInitResponse:
        shares, status = await self._seal.init(shares=request.key_shares, threshold=request.key_threshold)
        return kms_pb2.OperatorInitResponse(shares=shares, status=seal_status(status))

    async def OperatorUnseal(
        self, request: kms_pb2.OperatorUnsealRequest, context: Any
    ) -> kms_pb2.OperatorUnsealResponse:
        return kms_pb2.OperatorUnsealResponse(status=seal_status(await self._seal.unseal(request.share)))

    async def OperatorSeal(
        self, request: kms_pb2.OperatorSealRequest, context: Any
    ) -> kms_pb2.OperatorSealResponse:
        return kms_pb2.OperatorSealResponse(status=seal_status(await self._seal.seal()))

    async def OperatorStatus(
        self, request: kms_pb2.OperatorStatusRequest, context: Any
    ) -> kms_pb2.OperatorStatusResponse:
        return kms_pb2.OperatorStatusResponse(status=seal_status(self._seal.status()))
