"""Polling for tests: wait until a condition holds, fail with what was last seen.

``await eventually(probe, timeout=...)`` calls ``probe`` (plain or async) every ``interval`` seconds until
``until(value)`` holds (by default: until the value is truthy) and returns that value. An exception of a type
in ``retry_on`` (by default ``AssertionError``, so a probe may assert) counts as "not yet"; any other
exception propagates at once. When ``timeout`` seconds have passed it raises ``AssertionError`` with
``message`` and the last value or exception. ``eventually_sync`` is the same for blocking code.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


class _Poll:
    """The deadline, the last outcome and the verdict shared by both flavours. Used as ``with poll:`` around
    one try, it swallows (and remembers) the exceptions that mean "not yet"."""

    def __init__(
        self,
        *,
        timeout: float,
        until: Callable[[Any], object] | None = None,
        message: str = "",
        retry_on: tuple[type[BaseException], ...] = (AssertionError,),
    ) -> None:
        self.until = until if until is not None else bool
        self.timeout = timeout
        self.message = message
        self.retry_on = retry_on
        self.deadline = time.monotonic() + timeout
        self.last: object = None
        self.error: BaseException | None = None

    def __enter__(self) -> _Poll:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> bool:
        if isinstance(exc, self.retry_on):
            self.last, self.error = exc, exc
            return True
        return False

    def reached(self, value: object) -> bool:
        self.last, self.error = value, None
        return bool(self.until(value))

    def give_up_if_late(self) -> None:
        if time.monotonic() < self.deadline:
            return
        what = self.message or "condition"
        raise AssertionError(
            f"{what}: not reached within {self.timeout:g}s; last: {self.last!r}"
        ) from self.error


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 - how long to keep polling, not a timeout around one call
    interval: float = ...,
    until: Callable[[T], object] | None = ...,
    message: str = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = ...,
    until: Callable[[T], object] | None = ...,
    message: str = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(probe: Callable[[], Any], *, interval: float = 0.05, **options: Any) -> Any:
    """Poll ``probe`` (a function or a coroutine function) until ``until(value)`` holds; return the value."""
    poll = _Poll(**options)
    while True:
        with poll:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            if poll.reached(value):
                return value
        poll.give_up_if_late()
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    until: Callable[[T], object] | None = None,
    message: str = "",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """:func:`eventually` for blocking code: ``probe`` is a plain function, the wait is ``time.sleep``."""
    poll = _Poll(timeout=timeout, until=until, message=message, retry_on=retry_on)
    while True:
        with poll:
            value = probe()
            if poll.reached(value):
                return value
        poll.give_up_if_late()
        time.sleep(interval)
