"""WatchSecrets (issue 14): the change stream of the secrets a caller may describe, in commit order.

Each write appends its event to ``store.secret_events`` in its own transaction (``record_change`` and
migration 0009: positions are handed out in commit order). A stream reads the events after its position, keeps
those its filters match and its caller may describe (``secretsmanager:DescribeSecret`` on the secret as it is
now: identity policies re-resolved through the IAM directory's cache, the resource policy and tags read
again for every batch), and then waits for ``NOTIFY coffer_store_changed`` or, failing that, polls. While
nothing is sent it sends a Heartbeat carrying a fresh resume token, and it opens with one (the stream is
live from that point: a client may read what it caches after it). The call needs
``secretsmanager:WatchSecrets`` (resource ``*``); it is audited once, as a call, never per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from coffer.clock import Clock
from coffer.core import changes, errors
from coffer.core.arn import SecretRef
from coffer.core.principal import Principal
from coffer.core.validation import Checker
from coffer.pgnotify import NotifyHub
from coffer.store.app import StoreApp
from coffer.store.repository import StoreRepository
from coffer.store.sql.watch import EventRow

log = structlog.get_logger("coffer.store.watch")

WATCH_ACTION = "secretsmanager:WatchSecrets"
DESCRIBE_ACTION = "secretsmanager:DescribeSecret"
#: Events read per round trip.
BATCH = 500
MAX_SECRET_IDS = 100
MAX_PREFIX = 512

#: (principal ARN, access key id) -> the caller as the IAM directory knows it now.
CallerResolver = Callable[[str, str | None], Awaitable[Principal | None]]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a stream (protobuf stays in the servicer)."""

    resume_token: str
    kind: str
    event_time: datetime
    arn: str = ""
    name: str = ""
    version_id: str | None = None
    version_stages: tuple[str, ...] = ()
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class WatchFilter:
    refs: tuple[SecretRef | None, ...]
    name_prefix: str | None

    def matches(self, event: EventRow) -> bool:
        if self.name_prefix is not None and not event.name.startswith(self.name_prefix):
            return False
        if not self.refs:
            return True
        for ref in self.refs:
            if ref is None:
                continue
            if ref.arn is not None:
                # A full ARN names that secret only; a partial one (no suffix) resolves by name.
                if event.arn == ref.arn:
                    return True
            elif event.account == ref.account and event.name == ref.name:
                return True
        return False


class SecretWatch:
    def __init__(
        self,
        *,
        repo: StoreRepository,
        app: StoreApp,
        hub: NotifyHub,
        clock: Clock,
        heartbeat_seconds: float = 15.0,
        poll_seconds: float = 5.0,
        resolve_caller: CallerResolver | None = None,
    ) -> None:
        self._repo = repo
        self._app = app
        self._hub = hub
        self._clock = clock
        self._heartbeat = heartbeat_seconds
        self._poll = poll_seconds
        self._resolve_caller = resolve_caller

    def _filter(self, secret_ids: Sequence[str], name_prefix: str | None) -> WatchFilter:
        c = Checker()
        for i, secret_id in enumerate(secret_ids, start=1):
            c.secret_id(secret_id, f"secretIds.{i}.member")
        if name_prefix is not None:
            c.length("namePrefix", name_prefix, min_len=1, max_len=MAX_PREFIX)
        c.done()
        if len(secret_ids) > MAX_SECRET_IDS:
            raise errors.InvalidParameter(f"SecretIds may name at most {MAX_SECRET_IDS} secrets.")
        # A SecretId that can name nothing here (another region) matches nothing, like a missing secret:
        # watching a secret that does not exist yet is allowed (its creation is an event).
        return WatchFilter(tuple(self._app.ref_or_none(s) for s in secret_ids), name_prefix)

    async def _current_caller(self, caller: Principal) -> Principal:
        """The caller with its identity policies as they are now (the directory's cache follows IAM changes);
        a caller whose access key is gone ends the stream (AccessDeniedException)."""
        if self._resolve_caller is None or not caller.access_key_id:
            return caller
        fresh = await self._resolve_caller(caller.arn, caller.access_key_id)
        return caller if fresh is None else fresh

    async def _visible(self, caller: Principal | None, events: Sequence[EventRow]) -> set[int]:
        """Positions of the events the caller may describe (all of them for internal callers)."""
        if caller is None:
            return {e.position for e in events}
        if not events:
            return set()
        authz = self._app.authz
        facts = await self._repo.facts_by_arn(sorted({e.arn for e in events}))
        allowed: dict[str, bool] = {}
        for event in events:
            if event.arn not in allowed:
                decision = await authz.decide(caller, DESCRIBE_ACTION, event.arn, facts.get(event.arn))
                allowed[event.arn] = decision.allowed
        return {e.position for e in events if allowed[e.arn]}

    def _heartbeat_event(self, epoch: int, position: int) -> WatchEvent:
        return WatchEvent(
            resume_token=changes.encode_token(epoch, position),
            kind=changes.HEARTBEAT,
            event_time=self._clock.now(),
        )

    async def watch(
        self, *, resume_token: str | None, secret_ids: Sequence[str], name_prefix: str | None
    ) -> AsyncGenerator[WatchEvent, None]:
        """The stream: a Heartbeat first, then every matching visible event after the token (or after the
        newest event committed, without one), Heartbeats while idle. Runs until the caller goes away."""
        watch_filter = self._filter(secret_ids, name_prefix)
        caller = self._app.authz.caller()
        if caller is not None:
            self._app.authz.check_global(caller, WATCH_ACTION)
        if resume_token:
            epoch, position = changes.decode_token(resume_token)
        else:
            epoch, position = await self._repo.watch_head()
        loop = asyncio.get_running_loop()
        with self._hub.subscribe() as subscription:
            page = await self._repo.events_after(position, limit=BATCH)
            if page.epoch != epoch or position < page.trimmed_through:
                raise errors.InvalidRequest(changes.RESYNC_MESSAGE)
            yield self._heartbeat_event(epoch, position)
            last_sent = loop.time()
            while True:
                if page.epoch != epoch or position < page.trimmed_through:
                    # This stream fell behind the retention (or the database was replaced under it).
                    raise errors.InvalidRequest(changes.RESYNC_MESSAGE)
                matched = [e for e in page.events if watch_filter.matches(e)]
                if matched and caller is not None:
                    caller = await self._current_caller(caller)
                visible = await self._visible(caller, matched)
                for event in page.events:
                    position = event.position
                    if event.position in visible:
                        yield WatchEvent(
                            resume_token=changes.encode_token(epoch, position),
                            kind=event.kind,
                            event_time=event.event_time,
                            arn=event.arn,
                            name=event.name,
                            version_id=event.version_id,
                            version_stages=event.version_stages,
                            detail=event.detail,
                        )
                        last_sent = loop.time()
                if len(page.events) < BATCH:
                    poll_at = loop.time() + self._poll
                    while True:
                        now = loop.time()
                        if now - last_sent >= self._heartbeat:
                            yield self._heartbeat_event(epoch, position)
                            last_sent = now = loop.time()
                        if now >= poll_at:
                            break  # read again even without a notification (one may have been lost)
                        wake_at = min(poll_at, last_sent + self._heartbeat)
                        notice = await subscription.next_within(wake_at - now)
                        if notice is not None:
                            subscription.pending()  # one read covers a burst of notifications
                            break
                page = await self._repo.events_after(position, limit=BATCH)
