"""`make bench`: GetSecretValue and PutSecretValue through the whole running stack (client, gateway,
store, kms; TLS and mTLS; warm) at concurrency 1, 16 and 64, next to a bare grpc.aio echo server measured
in the same run. Prints ops/s, p50/p99 and the ratio to the echo. Then GetSecretValue over the AWS protocol
against Coffer's endpoint and moto's server, cached reads (SecretCache, the agent) and the cache's
propagation delay (``bench.aws_cache``), and ListSecrets pages at 100,000 secrets (``bench.list_secrets``).
A benchmark, not a test: no thresholds."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import aws_cache
from bench import list_secrets as bench_list_secrets
from bench.load import Result, drive
from coffer import logs
from coffer.embedded import free_port
from coffer.rpc.tls import GATEWAY_HOST, TlsFiles, channel_credentials, name_options
from coffer.testing.wait import eventually

CONCURRENCY = (1, 16, 64)


async def _echo_results(pki_dir: Path, duration: float, payload: int) -> dict[int, Result]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
        [sys.executable, "-m", "bench.echo_server", "--port-file", str(port_file), "--pki-dir", str(pki_dir)]
    )
    try:
        port = int(
            await eventually(
                lambda: port_file.read_text() if port_file.exists() else "",
                timeout=10,
                interval=0.05,
                message="the echo server's port file",
            )
        )
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(TlsFiles(ca=pki_dir / "ca.crt")),
            options=name_options(GATEWAY_HOST),
        )
        call = channel.unary_unary("/bench.Echo/Echo")
        body = os.urandom(payload)

        async def op(_: int) -> object:
            return await call(body)

        out = {c: await drive("echo", op, concurrency=c, duration=duration) for c in CONCURRENCY}
        await channel.close()
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _print(rows: list[tuple[Result, Result]]) -> None:
    print(
        f"{'operation':<16} {'conc':>4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" {'echo ops/s':>10} {'echo p50':>8} {'ratio ops':>9} {'ratio p50':>9}"
    )
    for res, echo in rows:
        print(
            f"{res.name:<16} {res.concurrency:>4} {res.ops_per_s:>9.0f} {res.p50_ms:>8.2f} {res.p99_ms:>8.2f}"
            f" {res.errors:>6} {echo.ops_per_s:>10.0f} {echo.p50_ms:>8.2f}"
            f" {res.ops_per_s / echo.ops_per_s:>9.2f} {res.p50_ms / echo.p50_ms:>9.2f}"
        )


#: The identity policy of the principal the "policies and auditing on" run reads and writes as: a name
#: prefix and an ABAC tag condition, as a team would scope an application.
APP_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
            "Resource": "arn:aws:secretsmanager:*:*:secret:bench/*",
            "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": "${aws:PrincipalTag/team}"}},
        }
    ],
}
#: Every secret's resource policy (so each decision also evaluates one).
RESOURCE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "secretsmanager:DeleteSecret",
            "Resource": "*",
        }
    ],
}


async def _app_client(admin: Any, info: Any) -> tuple[Any, Any]:
    """An access key of IAM user ``bench-app`` (tag team=bench, APP_POLICY), and a client signing with it
    (the key too: the AWS-protocol part signs with it)."""
    from coffer.client import Credentials
    from coffer.client.aio import AsyncCofferClient

    await admin.iam.create_user(user_name="bench-app", tags=[{"key": "team", "value": "bench"}])
    await admin.iam.put_user_policy(
        user_name="bench-app", policy_name="app", policy_document=json.dumps(APP_POLICY)
    )
    key = (await admin.iam.create_access_key(user_name="bench-app")).access_key
    client = AsyncCofferClient(
        endpoint=info.endpoint,
        ca_file=str(info.ca_file),
        credentials=Credentials(key.access_key_id, key.secret_access_key),
    )
    return client, key


@dataclass
class Extra:
    """The AWS-protocol, cached-read and propagation figures (measured in the policies-on run only)."""

    aws: list[Result] = field(default_factory=list)
    moto: list[Result] = field(default_factory=list)
    cache: list[Result] = field(default_factory=list)
    agent: list[Result] = field(default_factory=list)
    propagation_ms: list[float] = field(default_factory=list)


async def _measure(
    duration: float, list_secrets: int, *, bypass: bool, extra: Extra | None = None
) -> tuple[list[Result], Path]:
    """Start a throwaway deployment (``bypass``: COFFER_UNSAFE_BENCH_BYPASS, no policy decided and no
    audit event recorded) and drive GetSecretValue and PutSecretValue through it as ``bench-app``; with
    ``extra``, also the AWS-protocol, cached-read and propagation parts (``bench.aws_cache``)."""
    from coffer.client.aio import AsyncCofferClient
    from coffer.devrun import Deployment

    home = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    # No request rates: the bench measures throughput far above AWS's 50 writes/s quota.
    env = {"COFFER_THROTTLE": "off", "COFFER_AWS_ADDR": f"127.0.0.1:{free_port()}"}
    if bypass:
        env["COFFER_UNSAFE_BENCH_BYPASS"] = "1"
    deployment = Deployment.in_home(home, env=env, echo=lambda _line: None)
    await asyncio.to_thread(deployment.start)
    try:
        info = deployment.info()
        admin = AsyncCofferClient(
            endpoint=info.endpoint, ca_file=str(info.ca_file), credentials=info.credentials
        )
        client, key = await _app_client(admin, info)
        name = f"bench/{uuid.uuid4().hex[:8]}"
        value = "x" * 256
        tags = [{"key": "team", "value": "bench"}]
        policy = json.dumps(RESOURCE_POLICY)
        # AWS keeps every version younger than 24 h and refuses a 101st (LimitExceededException), so the
        # writes are spread over enough secrets to stay under that quota for the whole run.
        put_names = [f"{name}-put-{i}" for i in range(256)]
        for n in (name, *put_names):
            await admin.create_secret(name=n, secret_string=value, tags=tags)
            await admin.put_resource_policy(secret_id=n, resource_policy=policy)

        async def first_read() -> object:
            return await client.get_secret_value(secret_id=name)

        await eventually(first_read, timeout=10, interval=0.05, message="bench-app's first read")
        for _ in range(50):  # warm the channel, the caches and the data-key cache
            await client.get_secret_value(secret_id=name)

        async def get_op(_: int) -> object:
            return await client.get_secret_value(secret_id=name)

        counter = iter(range(10**9))

        async def put_op(_: int) -> object:
            target = put_names[next(counter) % len(put_names)]
            return await client.put_secret_value(secret_id=target, secret_string=uuid.uuid4().hex)

        results: list[Result] = []
        for c in CONCURRENCY:
            results.append(await drive("GetSecretValue", get_op, concurrency=c, duration=duration))
        for c in CONCURRENCY:
            results.append(await drive("PutSecretValue", put_op, concurrency=c, duration=duration))
        if extra is not None:
            await _extra(extra, deployment, info, key, name, value, duration)
        if list_secrets:
            await bench_list_secrets.run(
                admin,
                info.database_url,
                deployment.service_dsns["store"],
                count=list_secrets,
                region=deployment.settings.region,
                account=deployment.settings.account_id,
            )
        await client.close()
        await admin.close()
        return results, info.pki_dir
    finally:
        await asyncio.to_thread(deployment.stop)


async def _extra(
    extra: Extra, deployment: Any, info: Any, key: Any, name: str, value: str, duration: float
) -> None:
    """Fill ``extra``: GetSecretValue over the AWS protocol (Coffer, as bench-app, vs moto); cached reads
    and propagation with clients of the admin (the cache's reads are served from memory, whoever reads)."""
    from coffer.client.aio import AsyncCofferClient
    from coffer.devrun.config import aws_endpoint_url

    aws_url = aws_endpoint_url(deployment.settings)
    assert aws_url is not None, "the bench sets COFFER_AWS_ADDR"
    extra.aws, extra.moto = await aws_cache.aws_protocol(
        aws_url,
        info.ca_file,
        key,
        deployment.settings.region,
        name,
        value,
        levels=CONCURRENCY,
        duration=duration,
    )

    def admin_client() -> AsyncCofferClient:
        return AsyncCofferClient(
            endpoint=info.endpoint, ca_file=str(info.ca_file), credentials=info.credentials
        )

    cache_client = admin_client()  # the agent closes it with its cache
    extra.cache, extra.agent = await aws_cache.cached_reads(
        cache_client, name, levels=CONCURRENCY, duration=duration
    )
    writer, reader = admin_client(), admin_client()
    try:
        extra.propagation_ms = await aws_cache.propagation(writer, reader, f"{name}-put-0")
    finally:
        await writer.close()
        await reader.close()


async def main_async(duration: float, list_secrets: int) -> None:
    baseline, _ = await _measure(duration, 0, bypass=True)
    extra = Extra()
    results, pki_dir = await _measure(duration, list_secrets, bypass=False, extra=extra)
    echo = await _echo_results(pki_dir, duration, payload=300)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"\nCoffer bench, {stamp}, {os.cpu_count()} CPUs, {duration:.0f} s per point")
    print("client → gateway (TLS, signed) → store (mTLS) → kms (mTLS) vs a bare grpc.aio TLS echo")
    print("as IAM user bench-app: a policy on bench/* with a tag condition; a resource policy per secret\n")
    print("policies and auditing ON (each call decided, its CloudTrail event committed before the reply):")
    _print([(r, echo[r.concurrency]) for r in results])
    print("\npolicies and auditing OFF (COFFER_UNSAFE_BENCH_BYPASS, the same deployment otherwise):")
    _print([(r, echo[r.concurrency]) for r in baseline])
    print("\nkept with policies and auditing on (ops/s on / off):")
    for on, off in zip(results, baseline, strict=True):
        print(f"  {on.name:<16} {on.concurrency:>4}  {on.ops_per_s / off.ops_per_s:>6.0%}")
    print(
        "\nGetSecretValue over the AWS JSON protocol, the same client (aiohttp, botocore SigV4 per request)"
    )
    print("against Coffer's AWS endpoint (HTTPS, as bench-app, policies on) and moto's server (HTTP):")
    aws_cache.print_aws(extra.aws, extra.moto)
    gets = [r for r in results if r.name == "GetSecretValue"]
    print("\ncached reads (refresh 1 h; the change stream invalidates) next to uncached gRPC GetSecretValue:")
    print("SecretCache.get_secret_string in-process; the agent in this process over keep-alive HTTP")
    aws_cache.print_cached(gets, extra.cache, extra.agent)
    print("\npropagation:")
    aws_cache.print_propagation(extra.propagation_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per point")
    parser.add_argument(
        "--list-secrets", type=int, default=100_000, help="secrets for the ListSecrets benchmark (0: skip it)"
    )
    args = parser.parse_args()
    # The in-process caches and agent log each invalidation at debug level: only warnings in the output.
    logs.configure(service="bench", level="warning")
    asyncio.run(main_async(args.duration, args.list_secrets))


if __name__ == "__main__":
    main()
