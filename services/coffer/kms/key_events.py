"""``coffer.api.kms.v1.KeyEventsService``: the store follows key-state changes over this stream (to drop the
data keys it caches under a key that was disabled, scheduled for deletion or purged) instead of reading the
kms's database. The kms learns of changes by LISTENing on its own database, where every key-state change
(made by this process or by another kms replica) sends ``NOTIFY coffer_kms_key_changed`` with the key ARN.
Who may watch is the kms's peer policy (``WATCHERS``), checked by the interceptor like any other call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.kms.app import KmsApp
from coffer.kms.keystore import KEY_CHANGED_CHANNEL
from coffer.pgnotify import NotifyHub

SERVICE = kms_pb2.DESCRIPTOR.services_by_name["KeyEventsService"]
SERVICE_NAME = SERVICE.full_name
#: Only the store caches data keys, so only the store may follow key changes.
WATCHERS = frozenset({"store"})


def key_change_hub(database_url: str) -> NotifyHub:
    return NotifyHub(database_url, KEY_CHANGED_CHANNEL, service="kms")


class KeyEventsServicer(kms_pb2_grpc.KeyEventsServiceServicer):
    def __init__(self, hub: NotifyHub, app: KmsApp) -> None:
        self._hub = hub
        self._app = app

    async def DescribeKeyPolicy(
        self, request: kms_pb2.DescribeKeyPolicyRequest, context: grpc.aio.ServicerContext
    ) -> kms_pb2.DescribeKeyPolicyResponse:
        key = await self._app.key_for_service(key_arn=request.key_id)
        return kms_pb2.DescribeKeyPolicyResponse(
            key_arn=key.arn,
            account_id=key.account_id,
            key_manager=key.key_manager.value,
            policy=self._app.key_policy_text(key),
        )

    async def WatchKeyChanges(
        self, request: kms_pb2.WatchKeyChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kms_pb2.WatchKeyChangesResponse]:
        with self._hub.subscribe() as subscription:
            async for notice in subscription:
                if notice.payload is None:
                    yield kms_pb2.WatchKeyChangesResponse(reset=True)
                else:
                    yield kms_pb2.WatchKeyChangesResponse(key_arn=notice.payload)
