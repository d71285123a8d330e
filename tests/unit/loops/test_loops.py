"""The one background-loop helper: a failing round is logged with its traceback and the loop goes on (backing
off while failures repeat), a wake-up starts the next round early, and cancelling stops it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from coffer.loops import cancel_and_wait, run_forever, sleep_or_wake


async def _until(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the tests watch plain counters
            await asyncio.sleep(0.005)


async def test_a_failing_round_is_logged_with_its_traceback_and_the_loop_goes_on() -> None:
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(len(rounds))
        if len(rounds) <= 2:
            raise RuntimeError(f"round {len(rounds)} broke")

    with capture_logs() as logs:
        task = asyncio.create_task(run_forever(job, name="test.job", interval=0.01, retry_after=0.01))
        await _until(lambda: len(rounds) >= 4)
        await cancel_and_wait(task)
    failed = [e for e in logs if e["event"] == "test.job_failed"]
    assert len(failed) == 2
    for entry in failed:
        assert entry["log_level"] == "error"
        assert entry["exc_info"] is True  # log.exception: the traceback is rendered by the log pipeline
        assert entry["error_type"] == "RuntimeError"
    assert [e["failures"] for e in failed] == [1, 2]
    assert [e["after_failures"] for e in logs if e["event"] == "test.job_recovered"] == [2]


async def test_the_traceback_reaches_the_rendered_log_line() -> None:
    lines: list[str] = []

    async def job() -> None:
        raise ValueError("kaputt")

    def keep(_logger: Any, _method: str, event: Any) -> str:
        lines.append(str(event))
        return ""

    logger = structlog.wrap_logger(
        structlog.PrintLogger(), processors=[structlog.processors.format_exc_info, keep]
    )
    task = asyncio.create_task(run_forever(job, name="test.job", interval=1, logger=logger))
    await _until(lambda: bool(lines))
    await cancel_and_wait(task)
    assert "Traceback (most recent call last)" in lines[0]
    assert "ValueError: kaputt" in lines[0]


async def test_repeated_failures_back_off_up_to_the_limit() -> None:
    async def job() -> None:
        raise OSError("down")

    with capture_logs() as logs:
        task = asyncio.create_task(
            run_forever(job, name="test.job", interval=10, retry_after=0.001, retry_max=0.004)
        )
        await _until(lambda: len([e for e in logs if e["event"] == "test.job_failed"]) >= 5)
        await cancel_and_wait(task)
    delays = [e["retry_in_s"] for e in logs if e["event"] == "test.job_failed"][:5]
    assert delays == [0.001, 0.002, 0.004, 0.004, 0.004]


async def test_the_default_retry_is_the_interval_at_most_one_second() -> None:
    async def job() -> None:
        raise OSError("down")

    with capture_logs() as logs:
        task = asyncio.create_task(run_forever(job, name="test.job", interval=0.01))
        await _until(lambda: len([e for e in logs if e["event"] == "test.job_failed"]) >= 2)
        await cancel_and_wait(task)
    assert [e["retry_in_s"] for e in logs if e["event"] == "test.job_failed"][:2] == [0.01, 0.01]


async def test_cancelling_stops_the_loop_even_inside_a_round() -> None:
    started = asyncio.Event()
    rounds = 0

    async def job() -> None:
        nonlocal rounds
        rounds += 1
        started.set()
        await asyncio.Event().wait()  # a round that never ends by itself

    task = asyncio.create_task(run_forever(job, name="test.job", interval=0))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await asyncio.sleep(0.02)
    assert rounds == 1


async def test_a_wake_starts_the_next_round_before_the_interval() -> None:
    wake = asyncio.Event()
    rounds = 0

    async def job() -> None:
        nonlocal rounds
        rounds += 1

    task = asyncio.create_task(run_forever(job, name="test.job", interval=3600, wake=wake))
    await _until(lambda: rounds == 1)
    await asyncio.sleep(0.02)
    assert rounds == 1  # waiting out the hour
    wake.set()
    await _until(lambda: rounds == 2, within=2)
    await cancel_and_wait(task)


async def test_a_wake_during_a_round_runs_another_round_at_once() -> None:
    wake = asyncio.Event()
    rounds = 0

    async def job() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            wake.set()  # something changed while this round ran

    task = asyncio.create_task(run_forever(job, name="test.job", interval=3600, wake=wake))
    await _until(lambda: rounds == 2, within=2)
    await cancel_and_wait(task)


async def test_the_delay_a_round_returns_replaces_the_interval() -> None:
    rounds = 0

    async def job() -> float:
        nonlocal rounds
        rounds += 1
        return 0.0 if rounds < 5 else 3600.0

    task = asyncio.create_task(run_forever(job, name="test.job", interval=3600))
    await _until(lambda: rounds == 5, within=2)
    await cancel_and_wait(task)


async def test_sleep_or_wake() -> None:
    wake = asyncio.Event()
    assert await sleep_or_wake(0.01, wake) is False
    assert await sleep_or_wake(0.01) is False
    wake.set()
    assert await sleep_or_wake(3600, wake) is True
    wake.clear()
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await sleep_or_wake(3600, wake) is True


async def test_cancel_and_wait_logs_a_task_that_had_failed_and_ignores_none() -> None:
    async def broken() -> None:
        raise KeyError("lost")

    async def forever() -> None:
        await asyncio.Event().wait()

    failed = asyncio.create_task(broken(), name="broken-task")
    running = asyncio.create_task(forever())
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await cancel_and_wait(failed, running, None)
    assert running.cancelled()
    [entry] = [e for e in logs if e["event"] == "task_failed"]
    assert entry["task"] == "broken-task"
    assert isinstance(entry["exc_info"], KeyError)
