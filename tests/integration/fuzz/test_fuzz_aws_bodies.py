"""Byte-level mutation of AWS-protocol request bodies (issue 13), through the real stack's HTTPS endpoint:
for every ``X-Amz-Target`` Coffer serves, a well-formed body built from the operation's request message
(every member, with a plausible value of its type) is mutated (bits flipped, bytes inserted, deleted,
duplicated, the document cut short, a member's value swapped for another JSON type, deep nesting, invalid
UTF-8, huge numbers) and sent signed with a valid SigV4 signature (botocore's signer), so each request
reaches the parser and the operation behind it.

Invariants: no answer is a 500 (InternalFailure) or anything but AWS's JSON error shape; every answer has
an ``x-amzn-RequestId``; no answer but a GetSecretValue/BatchGetSecretValue success carries the value of a
canary secret planted before; the endpoint still serves afterwards. ``COFFER_FUZZ_REQUESTS`` sets the count
(``make test``: a few hundred; ``make fuzz``: 100,000 here too), printed per target and status.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import ssl
import uuid
from typing import Any

import aiohttp
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from coffer.client import AsyncCofferClient
from coffer.client.credentials import Credentials
from coffer.gateway.aws import jsonproto, longpoll
from coffer.testing.stack import ServiceStack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(0 if os.environ.get("COFFER_FUZZ_REQUESTS") else 120),
]

REQUESTS = int(os.environ.get("COFFER_FUZZ_REQUESTS", "300"))
CONCURRENCY = 16
SEED = 20261201
VALUE_TARGETS = frozenset({"secretsmanager.GetSecretValue", "secretsmanager.BatchGetSecretValue"})
REGION = "local-1"


def _sample(descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    """A well-formed document of ``descriptor``: every member, a plausible value of its type."""
    doc: dict[str, Any] = {}
    for field in descriptor.fields:
        name = jsonproto.member_name(field)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            doc[name] = {"k": "v"}
            continue
        message = field.message_type
        if message is not None:
            if message.full_name == "google.protobuf.Timestamp":
                value: Any = 1764547200.5
            elif depth > 2:
                continue
            else:
                value = _sample(message, depth + 1)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif field.type == FieldDescriptor.TYPE_BYTES:
            value = "AAEC"
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM):
            value = "fuzz/canary" if "id" in field.name.lower() or field.name == "name" else "x"
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            value = 1.5
        else:
            value = 1
        doc[name] = [value] if field.is_repeated else value
    return doc


def _mutate(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    kind = rng.randrange(10)
    if kind == 0 and data:  # flip bits
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # insert random bytes
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    elif kind == 2 and data:  # delete a span
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 8)]
    elif kind == 3 and data:  # cut short
        del data[rng.randrange(len(data)) :]
    elif kind == 4 and data:  # duplicate a span
        at = rng.randrange(len(data))
        data[at:at] = data[at : at + rng.randint(1, 32)]
    elif kind == 5:  # deep nesting
        depth = rng.choice([100, 1000, 50_000])
        data = bytearray(b"[" * depth + b"]" * depth)
    elif kind == 6:  # invalid UTF-8 inside a string
        data = bytearray(body.replace(b'"x"', b'"\xff\xfe"', 1))
    elif kind == 7:  # a huge number
        data = bytearray(body.replace(b"1", b"9" * rng.choice([20, 400, 5000]), 1))
    else:  # a member's value of another JSON type
        try:
            doc = json.loads(body)
        except ValueError:
            return bytes(data)
        if isinstance(doc, dict) and doc:
            key = rng.choice(sorted(doc))
            doc[key] = rng.choice([None, True, -1, 2**70, 1e308, "", "\x00", [], {}, [[[]]], {"a": {"b": 1}}])
            data = bytearray(json.dumps(doc).encode())
    return bytes(data)


def _signed_headers(url: str, creds: Credentials, target: str, body: bytes) -> dict[str, str]:
    service = "kms" if target.startswith("TrentService.") else "secretsmanager"
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    signer = BotoCredentials(creds.access_key_id, creds.secret_access_key)
    botocore.auth.SigV4Auth(signer, service, REGION).add_auth(request)
    return dict(request.headers.items())


async def test_mutated_aws_bodies_never_break_the_endpoint(fuzz_stack: ServiceStack) -> None:
    services = fuzz_stack
    creds = await services.credential("user/fuzz-aws")  # its secret sealed for SigV4
    canary_value = f"canary-{uuid.uuid4().hex}"
    assert services.gateway is not None and services.admin is not None
    admin = AsyncCofferClient(f"127.0.0.1:{services.gateway.port}", services.ca_file, services.admin)
    await admin.create_secret(name="fuzz/canary", secret_string=canary_value)

    targets = sorted(jsonproto.TARGETS)
    seeds: dict[str, bytes] = {}
    for target in targets:
        seeds[target] = json.dumps(_sample(jsonproto.request_descriptor(target))).encode()
    # The long poll too, never waiting (a mutation may still ask for up to 20 s: bounded by the timeout).
    poll = "secretsmanager.WatchSecrets"
    assert poll in longpoll.LONG_POLLS
    targets.append(poll)
    seeds[poll] = json.dumps({"WaitTimeSeconds": 0, "MaxEvents": 1, "NamePrefix": "x"}).encode()

    url = services.aws_endpoint + "/"
    context = ssl.create_default_context(cafile=str(services.ca_file))
    rng = random.Random(SEED)
    jobs = [(targets[i % len(targets)], i) for i in range(REQUESTS)]
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    failures: list[str] = []
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for target, _ in jobs:
        queue.put_nowait((target, _mutate(seeds[target], rng)))

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            target, body = queue.get_nowait()
            headers = _signed_headers(url, creds, target, body)
            async with session.post(url, data=body, headers=headers, ssl=context) as response:
                raw = await response.read()
                status = response.status
                counts[(target, status)] += 1
                where = f"{target} {body[:80]!r}"
                if status >= 500 and status != 503:
                    failures.append(f"{where}: {status} {raw[:200]!r}")
                if not response.headers.get("x-amzn-RequestId"):
                    failures.append(f"{where}: no x-amzn-RequestId")
                if canary_value.encode() in raw and not (status == 200 and target in VALUE_TARGETS):
                    failures.append(f"{where}: the canary's value in a {status} answer")
                if status != 200:
                    try:
                        error = json.loads(raw)
                    except ValueError:
                        failures.append(f"{where}: a {status} answer that is not JSON: {raw[:100]!r}")
                        continue
                    if not isinstance(error, dict) or not error.get("__type") or "message" not in error:
                        failures.append(
                            f"{where}: a {status} answer without AWS's error shape: {raw[:100]!r}"
                        )

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        # still serving: a new secret (the fuzzer may have deleted or changed the canary) reads back
        after = f"after-{uuid.uuid4().hex}"
        await admin.create_secret(name="fuzz/after", secret_string=after)
        body = json.dumps({"SecretId": "fuzz/after"}).encode()
        headers = _signed_headers(url, creds, "secretsmanager.GetSecretValue", body)
        async with session.post(url, data=body, headers=headers, ssl=context) as response:
            answer = await response.read()
            assert response.status == 200, answer
            assert json.loads(answer)["SecretString"] == after
    await admin.close()

    by_status = collections.Counter(status for (_t, status) in counts.elements())
    print(
        f"\nAWS-protocol body fuzzing: {sum(counts.values())} requests over {len(targets)} targets;"
        f" statuses {dict(sorted(by_status.items()))}"
    )
    assert sum(counts.values()) == REQUESTS
    assert not failures, "\n".join(failures[:20])
