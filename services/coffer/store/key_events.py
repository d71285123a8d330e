"""The store follows the kms's key-state changes over ``KeyEventsService/WatchKeyChanges`` and keeps its
data-key cache and its cache of key policies (``coffer.store.key_policies``) in step: a reset event (sent
first on every new stream, and whenever the kms may have missed changes) drops every cached data key and key
policy; a key event (a state or key-policy change) drops those of that key. When the stream breaks it
reconnects with back-off; the reset that opens the new stream drops whatever was cached meanwhile.

Works whatever databases the kms and the store use: the two meet only through this stream."""

from __future__ import annotations

import asyncio
import contextlib

from coffer import logs
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.loops import cancel_and_wait, run_forever
from coffer.store.key_policies import KeyPolicies
from coffer.store.kms_client import DataKeyCache

log = logs.get_logger("coffer.store.key_events")


class KeyEventsFollower:
    def __init__(
        self,
        stub: kms_pb2_grpc.KeyEventsServiceStub,
        cache: DataKeyCache,
        *,
        retry_seconds: float = 0.2,
        max_retry_seconds: float = 10.0,
        key_policies: KeyPolicies | None = None,
    ) -> None:
        self._stub = stub
        self._cache = cache
        self._key_policies = key_policies
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self._following = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def following(self) -> bool:
        """Whether a stream is open (its opening reset was applied)."""
        return self._following.is_set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-kms-key-events")

    async def wait_following(self, *, within: float) -> bool:
        """Wait until the first stream is open; ``False`` if it did not open ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._following.wait(), within)
        return self._following.is_set()

    def _apply(self, event: kms_pb2.WatchKeyChangesResponse) -> None:
        if event.reset:
            dropped = len(self._cache)
            self._cache.clear()
            if self._key_policies is not None:
                self._key_policies.clear()
            if not self._following.is_set():
                self._following.set()
                log.info("kms.key_events_following", dropped=dropped)
        else:
            evicted = self._cache.evict_key(event.key_arn)
            if self._key_policies is not None:
                self._key_policies.evict(event.key_arn)
            log.debug("kms.key_changed", key_arn=event.key_arn, evicted=evicted)

    async def _follow_once(self) -> None:
        """Follow one stream until it ends; a broken stream raises and ``run_forever`` reconnects with
        back-off. Whatever happens, the cache is no longer known to be in step once the stream is gone."""
        call = self._stub.WatchKeyChanges(kms_pb2.WatchKeyChangesRequest())
        try:
            async for event in call:
                self._apply(event)
            log.info("kms.key_events_ended")
        finally:
            call.cancel()
            self._following.clear()

    async def _run(self) -> None:
        await run_forever(
            self._follow_once,
            name="kms.key_events",
            interval=self._retry,
            retry_after=self._retry,
            retry_max=self._max_retry,
            logger=log,
        )

    async def aclose(self) -> None:
        await cancel_and_wait(self._task, logger=log)
