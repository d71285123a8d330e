"""gRPC ⇄ domain for ``coffer.api.kms.v1.SealService`` (operators, through the gateway only)."""

from __future__ import annotations

from typing import Any

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.core import errors
from coffer.kms.rekey import RootRotator
from coffer.kms.seal import Seal, SealMode, SealStatus

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
        rotation=status.rotation,
        rotation_to_mode=status.rotation_to_mode,
        new_root_key_id=status.new_root_key_id,
        rewrapped=status.rewrapped,
    )


class SealServicer(kms_pb2_grpc.SealServiceServicer):
    def __init__(self, seal: Seal, rotator: RootRotator) -> None:
        self._seal = seal
        self._rotator = rotator

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

    async def OperatorRotateRoot(
        self, request: kms_pb2.OperatorRotateRootRequest, context: Any
    ) -> kms_pb2.OperatorRotateRootResponse:
        return kms_pb2.OperatorRotateRootResponse(
            status=seal_status(await self._rotator.rotate(wait=request.wait))
        )

    async def OperatorMigrateSeal(
        self, request: kms_pb2.OperatorMigrateSealRequest, context: Any
    ) -> kms_pb2.OperatorMigrateSealResponse:
        try:
            to = SealMode.parse(request.to_mode)
        except ValueError:
            raise errors.InvalidParameter(
                f"to_mode must be 'shamir' or 'pkcs11'; got {request.to_mode!r}."
            ) from None
        shares, status = await self._rotator.migrate(
            to=to, shares=request.key_shares, threshold=request.key_threshold, wait=request.wait
        )
        return kms_pb2.OperatorMigrateSealResponse(shares=shares, status=seal_status(status))
