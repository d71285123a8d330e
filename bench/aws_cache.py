"""`make bench`'s AWS-protocol and caching parts (issues 10 and 14).

* GetSecretValue over the AWS JSON protocol: the SAME client (aiohttp, each request signed by botocore's
  SigV4 signer just before it is sent; the signing cost is the client's and the same for both servers)
  against Coffer's AWS endpoint (HTTPS) and against moto's server (``python -m moto.server``, plain HTTP on
  loopback, a separate process as Coffer's services are), a secret of the same size in each. boto3 itself
  is left out of the loop: its client-side cost would hide the servers' difference.
* Cached reads: ``SecretCache.get_secret_string`` in-process, and the agent (in this process, so its CPU is
  shared with the load) over HTTP with a keep-alive client, next to the uncached gRPC GetSecretValue.
* Propagation: from a PutSecretValue's return to the cache serving the new value.

A benchmark, not a test: no thresholds."""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from bench.load import Result, _percentile, drive
from coffer.embedded import free_port
from coffer.testing.wait import eventually

JSON = "application/x-amz-json-1.1"
MOTO_REGION = "us-east-1"
AGENT_TOKEN = "bench-agent-token"
#: What a first request may meet while a key's secret is being sealed or a server is starting.
RETRY = (RuntimeError, aiohttp.ClientError, OSError)


class SignedGetter:
    """GetSecretValue over the AWS JSON protocol with aiohttp, each request signed anew (fresh X-Amz-Date)."""

    def __init__(
        self,
        url: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        secret_id: str,
        *,
        ca_file: Path | None = None,
    ) -> None:
        self._url = url.rstrip("/") + "/"
        self._signer = botocore.auth.SigV4Auth(
            BotoCredentials(access_key_id, secret_access_key), "secretsmanager", region
        )
        self._body = json.dumps({"SecretId": secret_id}).encode()
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else False
        )
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SignedGetter:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, _: int = 0) -> str:
        assert self._session is not None
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=self._body,
            headers={"Content-Type": JSON, "X-Amz-Target": "secretsmanager.GetSecretValue"},
        )
        self._signer.add_auth(request)
        async with self._session.post(self._url, data=self._body, headers=dict(request.headers.items())) as r:
            document = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"GetSecretValue answered {r.status}: {document.get('__type')}")
            return str(document["SecretString"])


async def _start_moto(value: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """moto's server in its own process, with secret ``bench/moto`` of ``value``; (process, URL, name)."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client(
        "secretsmanager",
        endpoint_url=url,
        region_name=MOTO_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = "bench/moto"

    def create() -> object:
        return client.create_secret(Name=name, SecretString=value)

    await eventually(
        lambda: asyncio.to_thread(create),
        timeout=30,
        interval=0.2,
        message="moto's server answers",
        retry_on=(Exception,),
    )
    return proc, url, name


def print_aws(coffer: Sequence[Result], moto: Sequence[Result]) -> None:
    print(
        f"{'conc':>4} {'coffer ops/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}"
        f" {'moto ops/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} {'coffer/moto':>11}"
    )
    for c, m in zip(coffer, moto, strict=True):
        print(
            f"{c.concurrency:>4} {c.ops_per_s:>12.0f} {c.p50_ms:>7.2f} {c.p99_ms:>7.2f} {c.errors:>4}"
            f" {m.ops_per_s:>10.0f} {m.p50_ms:>7.2f} {m.p99_ms:>7.2f} {m.errors:>4}"
            f" {c.ops_per_s / m.ops_per_s if m.ops_per_s else float('nan'):>11.2f}"
        )


async def aws_protocol(
    aws_url: str,
    ca_file: Path,
    key: Any,
    region: str,
    secret_id: str,
    value: str,
    *,
    levels: Sequence[int],
    duration: float,
) -> tuple[list[Result], list[Result]]:
    """GetSecretValue over the AWS protocol: (Coffer's results, moto's) at each concurrency."""

    coffer = SignedGetter(
        aws_url, key.access_key_id, key.secret_access_key, region, secret_id, ca_file=ca_file
    )
    async with coffer:
        await eventually(
            coffer.get,
            timeout=30,
            interval=0.1,
            message="the AWS endpoint serves the key",
            retry_on=RETRY,
        )
        for _ in range(50):
            await coffer.get()
        coffer_results = [
            await drive("AWS GetSecretValue", coffer.get, concurrency=c, duration=duration) for c in levels
        ]
    proc, moto_url, moto_name = await _start_moto(value)
    try:
        moto = SignedGetter(moto_url, "testing", "testing", MOTO_REGION, moto_name)
        async with moto:
            for _ in range(50):
                await moto.get()
            moto_results = [
                await drive("moto GetSecretValue", moto.get, concurrency=c, duration=duration) for c in levels
            ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return coffer_results, moto_results


async def cached_reads(
    client: Any, name: str, *, levels: Sequence[int], duration: float
) -> tuple[list[Result], list[Result]]:
    """(SecretCache.get_secret_string in-process, the agent over keep-alive HTTP) at each concurrency."""
    from coffer.agent import AgentConfig, start_agent
    from coffer.client.cache import SecretCache, SecretCacheConfig

    cache = SecretCache(SecretCacheConfig(secret_refresh_interval=3600), client)
    try:
        await cache.start()

        async def cache_op(_: int) -> object:
            return await cache.get_secret_string(name)

        await cache_op(0)
        in_process = [await drive("SecretCache", cache_op, concurrency=c, duration=duration) for c in levels]
    finally:
        await cache.close()

    agent = await start_agent(AgentConfig(log_to_file=False, ttl_seconds=3600), client, AGENT_TOKEN, port=0)
    agent_results: list[Result] = []
    try:
        url = f"http://127.0.0.1:{agent.port}/v1/{name}"
        headers = {"X-Aws-Parameters-Secrets-Token": AGENT_TOKEN}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def agent_op(_: int) -> object:
                async with session.get(url, headers=headers) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"the agent answered {r.status}")
                    return body

            await agent_op(0)
            for c in levels:
                agent_results.append(await drive("agent (HTTP)", agent_op, concurrency=c, duration=duration))
    finally:
        await agent.close()
    return in_process, agent_results


async def propagation(writer: Any, reader: Any, name: str, *, puts: int = 50) -> list[float]:
    """Milliseconds from each PutSecretValue's return (``writer``) to a cache (over ``reader``, refresh
    interval one hour: only the change stream can bring the value) serving the new value; polled each
    millisecond, so the figures carry up to about 1 ms of polling."""
    from coffer.client.cache import SecretCache, SecretCacheConfig

    cache = SecretCache(SecretCacheConfig(secret_refresh_interval=3600), reader)
    out: list[float] = []
    try:
        await cache.start()
        await eventually(
            lambda: cache.stream_connected.is_set() or _nudge(writer, name),
            timeout=30,
            interval=0.2,
            message="the cache's change stream delivers",
        )
        await cache.get_secret_string(name)
        for _ in range(puts):
            value = uuid.uuid4().hex
            await writer.put_secret_value(secret_id=name, secret_string=value)
            t0 = time.perf_counter()
            await eventually(
                lambda: cache.get_secret_string(name),
                until=value.__eq__,
                timeout=30,
                interval=0.001,
                message="the cache serves the new value",
            )
            out.append((time.perf_counter() - t0) * 1000.0)
            await asyncio.sleep(0.02)
    finally:
        await cache.close()
    return out


async def _nudge(writer: Any, name: str) -> bool:
    """A write, so that the stream has an event to deliver (it counts as connected after its first)."""
    await writer.put_secret_value(secret_id=name, secret_string=uuid.uuid4().hex)
    return False


def print_cached(uncached: Sequence[Result], cache: Sequence[Result], agent: Sequence[Result]) -> None:
    print(
        f"{'conc':>4} {'gRPC ops/s':>10} {'p50 ms':>7} {'cache ops/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'x gRPC':>7} {'agent ops/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'x gRPC':>7}"
    )
    for u, c, a in zip(uncached, cache, agent, strict=True):
        print(
            f"{u.concurrency:>4} {u.ops_per_s:>10.0f} {u.p50_ms:>7.2f} {c.ops_per_s:>11.0f} {c.p50_ms:>7.3f}"
            f" {c.p99_ms:>7.3f} {c.ops_per_s / u.ops_per_s:>7.0f} {a.ops_per_s:>11.0f} {a.p50_ms:>7.2f}"
            f" {a.p99_ms:>7.2f} {a.ops_per_s / u.ops_per_s:>7.1f}"
        )


def print_propagation(millis: list[float]) -> None:
    ordered = sorted(millis)
    print(
        f"{len(ordered)} puts: p50 {statistics.median(ordered):.1f} ms,"
        f" p99 {_percentile(ordered, 0.99):.1f} ms,"
        f" max {ordered[-1]:.1f} ms (from PutSecretValue's return to the cache serving the new value)"
    )
