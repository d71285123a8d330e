"""``RotationControlService/WatchRotationRequests``: wakes the rotation service's scheduler when a rotation is
requested, so that it claims the new attempt at once instead of at its next poll. The store LISTENs on its
own database, where RotateSecret sends ``NOTIFY coffer_rotation_requested`` when its transaction commits
(from any store replica); the scheduler never touches the database. Who may watch is the store's peer policy
(the interceptor checks it for streaming methods too). A burst of requests may reach the scheduler as one
wake-up: it claims everything due on each one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from coffer.api.store.v1 import store_pb2
from coffer.pgnotify import NotifyHub
from coffer.store.repository import ROTATION_CHANNEL

METHOD = "/coffer.api.store.v1.RotationControlService/WatchRotationRequests"
#: The scheduler runs in the rotation service.
WATCHERS = frozenset({"rotation"})


def rotation_request_hub(database_url: str) -> NotifyHub:
    return NotifyHub(database_url, ROTATION_CHANNEL, service="store")


async def watch_rotation_requests(
    hub: NotifyHub, context: grpc.aio.ServicerContext
) -> AsyncIterator[store_pb2.WatchRotationRequestsResponse]:
    """One wake-up when the stream opens (the opening reset: requests may have been missed), then one per
    burst of notifications."""
    with hub.subscribe() as subscription:
        async for _notice in subscription:
            subscription.pending()  # a burst is one wake-up: the scheduler claims everything due
            yield store_pb2.WatchRotationRequestsResponse()
