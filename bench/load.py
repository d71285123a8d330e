"""A closed-loop load driver: ``conc`` coroutines each send the next request as soon as the previous answer
arrives, for a warm-up and then a measured window. Bounded in time; talks only to loopback services."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


async def drive(
    name: str,
    op: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
) -> Result:
    """Run ``op(worker_index)`` in ``concurrency`` closed loops; measure the window after ``warmup``."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker(i: int) -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            now = loop.time()
            if now >= stop_at:
                return
            try:
                await op(i)
            except Exception:
                errors += 1
                continue
            if now >= measure_from:
                latencies.append((time.perf_counter() - t0) * 1000.0)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    latencies.sort()
    return Result(
        name=name,
        concurrency=concurrency,
        ops=len(latencies),
        seconds=duration,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p99_ms=_percentile(latencies, 0.99),
        errors=errors,
    )
