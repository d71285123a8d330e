"""The store follows the kms's key-state changes over ``KeyEventsService/WatchKeyChanges`` and keeps its
data-key cache and its cache of key policies (``coffer.store.key_policies``) in step: a reset event (sent
first on every new stream, and whenever the kms may have missed changes) drops every cached data key and key
policy; a key event (a state or key-policy change) drops those of that key. When the stream breaks it
reconnects with back-off; the reset that opens the new stream drops whatever was cached meanwhile.

Works whatever databases the kms and the store use: the two meet only through this stream."""

from __future__ import annotations

from coffer import logs
from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.loops import EventStream, StreamFollower
from coffer.store.key_policies import KeyPolicies
from coffer.store.kms_client import DataKeyCache

log = logs.get_logger("coffer.store.key_events")


class KeyEventsFollower(StreamFollower[kms_pb2.WatchKeyChangesResponse]):
    def __init__(
        self,
        stub: kms_pb2_grpc.KeyEventsServiceStub,
        cache: DataKeyCache,
        *,
        retry_seconds: float = 0.2,
        max_retry_seconds: float = 10.0,
        key_policies: KeyPolicies | None = None,
    ) -> None:
        super().__init__(
            loop_name="kms.key_events",
            task_name="store-kms-key-events",
            retry_seconds=retry_seconds,
            max_retry_seconds=max_retry_seconds,
            logger=log,
        )
        self._stub = stub
        self._cache = cache
        self._key_policies = key_policies

    def _open(self) -> EventStream[kms_pb2.WatchKeyChangesResponse]:
        stream: EventStream[kms_pb2.WatchKeyChangesResponse] = self._stub.WatchKeyChanges(
            kms_pb2.WatchKeyChangesRequest()
        )
        return stream

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

    def _stream_ended(self) -> None:
        log.info("kms.key_events_ended")
