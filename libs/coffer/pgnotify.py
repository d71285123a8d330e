"""A service LISTENing on a channel of its OWN PostgreSQL database and fanning the notifications out to
in-process subscribers (the server side of the gRPC watch streams: a kms's key changes, a store's rotation
requests). Other services learn of these only through those streams, never through the database.

Notifications are sent inside the writing transaction, so they arrive after it committed, from every replica
that writes to the database. A subscriber first receives a *reset* (``Notice(payload=None)``: act as if
anything may have changed, since notifications sent before it subscribed are not replayed), then one notice
per notification. Another reset follows whenever notifications may have been missed: the LISTEN connection
was lost (and again once it is back), or the subscriber fell more than ``queue_limit`` notices behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg

from coffer import logs
from coffer.core import errors
from coffer.loops import cancel_and_wait

log = logs.get_logger("coffer.pgnotify")


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification's payload, or ``None`` for a reset (notifications may have been missed)."""

    payload: str | None

    @property
    def reset(self) -> bool:
        return self.payload is None


RESET = Notice(None)
_CLOSED = object()


class Subscription:
    """One subscriber's queue of notices; iterate it until the hub closes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: asyncio.Queue[Notice | object] = asyncio.Queue()

    def push(self, notice: Notice) -> None:
        if self._queue.qsize() >= self._limit:
            # Too far behind: what it missed is summed up by one reset.
            while not self._queue.empty():
                self._queue.get_nowait()
            notice = RESET
        self._queue.put_nowait(notice)

    def close(self) -> None:
        self._queue.put_nowait(_CLOSED)

    def pending(self) -> list[Notice]:
        """The notices already queued, without waiting (to coalesce a burst)."""
        out: list[Notice] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                break
            assert isinstance(item, Notice)
            out.append(item)
        return out

    async def next_within(self, seconds: float) -> Notice | None:
        """The next notice, waiting at most ``seconds`` (None: none came, or the hub closed). Unlike
        ``anext`` on the iterator, a timeout here leaves the subscription usable."""
        try:
            item = await asyncio.wait_for(self._queue.get(), seconds)
        except TimeoutError:
            return None
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            return None
        assert isinstance(item, Notice)
        return item

    def __aiter__(self) -> AsyncIterator[Notice]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Notice]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return
            assert isinstance(item, Notice)
            yield item


class NotifyHub:
    """A dedicated connection LISTENing on ``channel``, reconnecting with back-off when it is lost."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        service: str,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 30.0,
        queue_limit: int = 1000,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._service = service
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self._queue_limit = queue_limit
        self._subscribers: set[Subscription] = set()
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def channel(self) -> str:
        return self._channel

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._broadcast(Notice(payload))

    def _terminated(self, _conn: object) -> None:
        self._lost.set()

    def _broadcast(self, notice: Notice) -> None:
        for sub in tuple(self._subscribers):
            sub.push(notice)

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            await conn.add_listener(self._channel, self._notified)
            conn.add_termination_listener(self._terminated)
        except BaseException:
            await conn.close()
            raise
        self._lost.clear()
        self._conn = conn

    async def start(self) -> None:
        """Connect and LISTEN (``errors.Unavailable`` if PostgreSQL is unreachable), then keep listening."""
        try:
            await self._connect()
        except (OSError, asyncpg.PostgresError) as exc:
            raise errors.Unavailable(
                f"{self._service}: cannot LISTEN on PostgreSQL: {type(exc).__name__}: {exc}"
            ) from exc
        self._task = asyncio.get_running_loop().create_task(
            self._watch(), name=f"{self._service}-listen-{self._channel}"
        )

    async def _watch(self) -> None:
        while not self._closed:
            await self._lost.wait()
            self._conn = None
            log.warning("pgnotify.connection_lost", service=self._service, channel=self._channel)
            self._broadcast(RESET)
            delay = self._retry
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except (OSError, asyncpg.PostgresError, TimeoutError):
                    log.warning(
                        "pgnotify.reconnect_failed",
                        service=self._service,
                        channel=self._channel,
                        retry_seconds=delay,
                        exc_info=True,
                    )
                    delay = min(delay * 2, self._max_retry)
                    continue
                break
            log.info("pgnotify.reconnected", service=self._service, channel=self._channel)
            self._broadcast(RESET)  # anything sent while we were not listening was missed

    def reset(self) -> None:
        """Send every subscriber a reset now (the owner changed something notifications do not carry)."""
        self._broadcast(RESET)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A new subscription, starting with a reset; removed when the ``with`` block ends."""
        sub = Subscription(self._queue_limit)
        sub.push(RESET)
        if self._closed:
            sub.close()
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    async def aclose(self) -> None:
        """Stop listening and end every subscription (their streams finish)."""
        self._closed = True
        for sub in tuple(self._subscribers):
            sub.close()
        await cancel_and_wait(self._task, logger=log)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close(timeout=2)
