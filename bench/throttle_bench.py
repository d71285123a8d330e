"""The gateway's throttling cost per call, by hand: ``.venv/bin/python -m bench.throttle_bench``. Times
``Throttle.admit`` (AWS's default rates, a real monotonic clock) for one principal and for 10,000 principals
in turn, next to a plain dict lookup and an unthrottled action (one lookup that misses). A benchmark, not a
test: no thresholds."""

from __future__ import annotations

import time

from coffer.core.throttle import Throttle

N = 200_000
ACCOUNT = "000000000000"
GET = "secretsmanager:GetSecretValue"


def _ns(start: float, n: int) -> float:
    return (time.perf_counter() - start) / n * 1e9


def main() -> None:
    table = {GET: 1}
    start = time.perf_counter()
    for _ in range(N):
        table.get(GET)
    lookup = _ns(start, N)

    throttle = Throttle()
    admit = throttle.admit
    principal = f"arn:aws:iam::{ACCOUNT}:user/app"
    start = time.perf_counter()
    for _ in range(N):
        admit(ACCOUNT, principal, GET)
    one = _ns(start, N)

    throttle = Throttle()
    admit = throttle.admit
    principals = [f"arn:aws:iam::{ACCOUNT}:user/u{i}" for i in range(10_000)]
    start = time.perf_counter()
    for i in range(N):
        admit(ACCOUNT, principals[i % 10_000], GET)
    many = _ns(start, N)

    start = time.perf_counter()
    for _ in range(N):
        admit(ACCOUNT, principal, "iam:GetUser")
    untouched = _ns(start, N)

    print(f"dict lookup                         {lookup:7.0f} ns")
    print(f"Throttle.admit, one principal       {one:7.0f} ns/call")
    print(f"Throttle.admit, 10,000 principals   {many:7.0f} ns/call ({len(throttle)} buckets held)")
    print(f"Throttle.admit, unthrottled action  {untouched:7.0f} ns/call")
    print(f"({N} calls each)")


if __name__ == "__main__":
    main()
