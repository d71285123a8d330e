"""Background loops, one way: run a job now and again forever, log every failure with its traceback and go on
(backing off while failures repeat), wake early when asked, and stop only when cancelled.

``run_forever`` is the loop; ``sleep_or_wake`` the wait it (and any hand-made polling) uses;
``cancel_and_wait`` stops background tasks without losing an error one of them ended with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import structlog

_log = structlog.get_logger("coffer.loops")

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
