"""The store's authorization cost per call, by hand: ``.venv/bin/python -m bench.authz_bench``. Times
``StoreAuthz.check`` for the legacy administrator on a tagged secret: a cache hit (GetSecretValue of an
unchanged secret: the hot path) and a miss (every PutSecretValue changes the secret's change sequence). A
benchmark, not a test: no thresholds."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from coffer.clock import SystemClock
from coffer.core.model import Tag
from coffer.core.secret_keys import RequestParams, SecretFacts
from coffer.rpc.context import principal_var
from coffer.store.authz import StoreAuthz

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbC123"
SECRET = SecretFacts(
    arn=ARN,
    name="app/db",
    account="000000000000",
    region="local-1",
    tags=(Tag("team", "a"), Tag("env", "prod")),
)
N = 20_000


async def main_async() -> None:
    authz = StoreAuthz(region="local-1", account="000000000000", clock=SystemClock())
    principal_var.set("user/admin")
    start = time.perf_counter()
    for _ in range(N):
        caller = authz.caller()
        assert caller is not None
        await authz.check(caller, "secretsmanager:GetSecretValue", "app/db", SECRET, RequestParams())
    hit = (time.perf_counter() - start) / N * 1e6
    start = time.perf_counter()
    for i in range(N):
        caller = authz.caller()
        assert caller is not None
        changed = dataclasses.replace(SECRET, change_seq=i + 1)
        await authz.check(caller, "secretsmanager:PutSecretValue", "app/db", changed, RequestParams())
    miss = (time.perf_counter() - start) / N * 1e6
    print(f"StoreAuthz.check: cache hit {hit:.1f} µs/call, miss {miss:.1f} µs/call ({N} calls each)")


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
