"""Policy evaluation cost, by hand: ``.venv/bin/python -m bench.policy_bench``. Times one evaluation of a
typical three-statement identity policy (a tag condition with a policy variable, a Bool deny, a List*
allow) from the compile cache, next to a bare dict lookup measured in the same run. A benchmark, not a
test: no thresholds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from coffer.core.policy import PolicyCache, RequestContext, evaluate

ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:app/db-AbCdEf"
TYPICAL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": f"arn:aws:secretsmanager:*:{ACCOUNT}:secret:*",
                "Condition": {
                    "StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}
                },
            },
            {
                "Effect": "Deny",
                "Action": "secretsmanager:*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {"Effect": "Allow", "Action": "secretsmanager:List*", "Resource": "*"},
        ],
    }
)


def _best_per_call(fn: Callable[[], object], n: int = 20_000, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def main() -> None:
    cache = PolicyCache()
    policy = cache.get(TYPICAL)
    ctx = RequestContext(
        principal_arn=ALICE,
        principal_account=ACCOUNT,
        action="secretsmanager:GetSecretValue",
        resource=SECRET,
        resource_account=ACCOUNT,
        principal_tags={"team": "payments"},
        keys={"secretsmanager:ResourceTag/team": ["payments"], "aws:SecureTransport": ["true"]},
    )
    table = {SECRET: True}
    base = _best_per_call(lambda: table.get(SECRET))
    evaluation = _best_per_call(lambda: evaluate(ctx, [policy]))
    cached = _best_per_call(lambda: cache.get(TYPICAL))
    print(f"dict lookup (baseline)      {base * 1e6:8.2f} us")
    print(f"policy evaluate (cached)    {evaluation * 1e6:8.2f} us   {evaluation / base:8.0f}x baseline")
    print(f"compile-cache hit           {cached * 1e6:8.2f} us   {cached / base:8.0f}x baseline")


if __name__ == "__main__":
    main()
