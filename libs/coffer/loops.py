"""Background loops, one way: run a job now and again forever, log every failure with its traceback and go on
(backing off while failures repeat), wake early when asked, and stop only when cancelled.

``run_forever`` is the loop; ``sleep_or_wake`` the wait it (and any hand-made polling) uses;
``cancel_and_wait`` stops background tasks without losing an error one of them ended with.
``StreamFollower`` follows a server stream of change events with ``run_forever``, reopening it when it breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import structlog

_log = structlog.get_logger("coffer.loops")

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)

#: After a failure, when no ``retry_after`` is given: the interval, but at most this long.
DEFAULT_FIRST_RETRY = 1.0


async def sleep_or_wake(seconds: float, wake: asyncio.Event | None = None) -> bool:
    """Wait ``seconds``, or less if ``wake`` is set (it may already be). True when woken early."""
    if wake is None:
        await asyncio.sleep(seconds)
        return False
    if wake.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await wake.wait()
    except TimeoutError:
        return False
    return True


async def run_forever(
    job: Callable[[], Awaitable[float | None]],
    *,
    name: str,
    interval: float,
    wake: asyncio.Event | None = None,
    retry_after: float | None = None,
    retry_max: float | None = None,
    logger: Any = None,
) -> NoReturn:
    """Run ``job`` forever: after each round wait ``interval`` seconds (or the delay the job returned, 0 for
    "go again now"), or less if ``wake`` is set. ``wake`` is cleared before each round, so a wake-up that
    arrives while the job runs starts the next round at once.

    A round that raises is logged as ``<name>_failed`` with its traceback and retried after ``retry_after``
    seconds (default: the interval, at most one second), doubling while failures repeat up to ``retry_max``
    (default: the larger of ``retry_after`` and the interval); the first round that succeeds again is logged
    as ``<name>_recovered``. Cancelling the task running this is the only way to stop it: the
    CancelledError propagates."""
    log = _log if logger is None else logger
    first_retry = retry_after if retry_after is not None else (min(interval, DEFAULT_FIRST_RETRY) or 1.0)
    longest_retry = retry_max if retry_max is not None else max(first_retry, interval)
    failures = 0
    while True:
        if wake is not None:
            wake.clear()
        try:
            delay = await job()
        except Exception as exc:  # logged with its traceback; the loop goes on (the rule for background work)
            failures += 1
            delay = min(longest_retry, first_retry * 2 ** min(failures - 1, 30))
            log.exception(
                f"{name}_failed", error_type=type(exc).__name__, failures=failures, retry_in_s=round(delay, 3)
            )
        else:
            if failures:
                log.info(f"{name}_recovered", after_failures=failures)
                failures = 0
            if delay is None:
                delay = interval
        if delay > 0:
            await sleep_or_wake(delay, wake)
        else:
            await asyncio.sleep(0)  # let other tasks (and a cancellation) in between rounds


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None, logger: Any = None) -> None:
    """Cancel the tasks and wait until they have ended. A task that had already ended with an error (not a
    cancellation) has that error logged with its traceback, so that stopping never hides it. If the caller is
    itself cancelled while waiting, that cancellation propagates."""
    log = _log if logger is None else logger
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    if not pending:
        return
    await asyncio.wait(pending)
    for task in pending:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            log.error("task_failed", task=task.get_name(), error_type=type(exc).__name__, exc_info=exc)


class EventStream(Protocol[E_co]):
    """What a server-streaming call gives: its events, and a way to stop it."""

    def __aiter__(self) -> AsyncIterator[E_co]: ...

    def cancel(self) -> bool: ...


class StreamFollower(Generic[E]):
    """Follow a stream of change events for as long as the task :meth:`start` runs: open it (:meth:`_open`),
    apply each event (:meth:`_apply`) and, when it ends or breaks, reopen it through ``run_forever`` (backing
    off while failures repeat). ``_following`` is set by the subclass once it applied the stream's opening
    reset, and cleared whenever the stream is gone (then :meth:`_stream_gone` runs)."""

    def __init__(
        self,
        *,
        loop_name: str,
        task_name: str,
        retry_seconds: float,
        max_retry_seconds: float,
        logger: Any = None,
    ) -> None:
        self._loop_name = loop_name
        self._task_name = task_name
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self._loop_log = _log if logger is None else logger
        self._following = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def following(self) -> bool:
        """Whether a stream is open (its opening reset was applied)."""
        return self._following.is_set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._task_name)

    async def wait_following(self, *, within: float) -> bool:
        """Wait until the first stream is open; ``False`` if it did not open ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._following.wait(), within)
        return self._following.is_set()

    def _open(self) -> EventStream[E]:
        raise NotImplementedError

    def _apply(self, event: E) -> None:
        raise NotImplementedError

    def _stream_ended(self) -> None:
        """The stream ended without an error (before :meth:`_stream_gone`)."""

    def _stream_gone(self) -> None:
        """The stream is gone (ended, broke or was cancelled); ``_following`` is already cleared."""

    async def _follow_once(self) -> None:
        """Follow one stream until it ends; a broken stream raises and ``run_forever`` reopens it."""
        call = self._open()
        try:
            async for event in call:
                self._apply(event)
            self._stream_ended()
        finally:
            call.cancel()
            self._following.clear()
            self._stream_gone()

    async def _run(self) -> None:
        await run_forever(
            self._follow_once,
            name=self._loop_name,
            interval=self._retry,
            retry_after=self._retry,
            retry_max=self._max_retry,
            logger=self._loop_log,
        )

    async def aclose(self) -> None:
        await cancel_and_wait(self._task, logger=self._loop_log)
