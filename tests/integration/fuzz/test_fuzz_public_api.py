"""Fuzzing every public RPC of the gateway with requests generated from the protobuf descriptors (Hypothesis
strategies built here from ``google.protobuf.descriptor`` field types), through the real kms → store → gateway
stack, signed as the admin and, for a share of the calls, as a restricted user.

Invariants: no call answers INTERNAL or UNKNOWN; no response, error message or trailer carries the value of a
canary secret planted before (except GetSecretValue/BatchGetSecretValue answered to the admin, whose job it
is); the services still serve at the end (a new secret is written and read back, the health check SERVING).

``COFFER_FUZZ_REQUESTS`` sets the number of requests (``make test``: a few hundred; ``make fuzz``: 100,000,
printing the counts per RPC and per status).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from coffer.api.kms.v1 import kms_pb2, kms_pb2_grpc
from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.client.credentials import Credentials, SigningInterceptor
from coffer.gateway.aws.jsonproto import INT_RANGES
from coffer.gateway.servicer import PUBLIC_SERVICES, full_method
from coffer.rpc.tls import GATEWAY_HOST, name_options
from coffer.store.iam_bootstrap import issue_user_key
from coffer.testing.stack import ServiceStack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(0 if os.environ.get("COFFER_FUZZ_REQUESTS") else 120),
]

#: Requests in the run: ``make test`` keeps the default (a few seconds), ``make fuzz`` asks for 100,000.
REQUESTS = int(os.environ.get("COFFER_FUZZ_REQUESTS", "300"))
#: Calls in flight at once.
CONCURRENCY = 16
#: One call in RESTRICTED_EVERY is signed as the restricted user.
RESTRICTED_EVERY = 5
#: Requests generated per Hypothesis run (one run per RPC and batch, each with its own fixed seed).
BATCH = 200
#: Whose responses carry secret values by design (to a caller allowed to read them).
VALUE_METHODS = frozenset({"GetSecretValue", "BatchGetSecretValue"})
BAD_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
MAX_DEPTH = 3

INT_BOUNDS = INT_RANGES


@dataclass(frozen=True)
class Pools:
    """Values drawn from what exists, so that calls get past "not found" into the deep paths."""

    names: tuple[str, ...]
    arns: tuple[str, ...]
    version_ids: tuple[str, ...]
    key_ids: tuple[str, ...]


# --- strategies from the descriptors ---------------------------------------------------------------------


def _integers(kind: int) -> st.SearchStrategy[int]:
    lo, hi = INT_BOUNDS[kind]
    edges = [lo, hi, 0, 1, -1 if lo < 0 else 2, lo + 1, hi - 1]
    return st.one_of(
        st.sampled_from(edges), st.integers(lo, hi), st.integers(-1, 100).filter(lambda v: v >= lo)
    )


def _huge_text() -> st.SearchStrategy[str]:
    return st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(1_000, 300_000))


def _text(name: str, pools: Pools) -> st.SearchStrategy[str]:
    plain = st.one_of(
        st.text(max_size=40),  # any code point but surrogates: controls, NUL, unicode
        st.text(st.characters(max_codepoint=0x7F), max_size=300),
        st.sampled_from(["", " ", "*", "..", "%", "\x00", "a\x1bb", "é", "\U0001f511", "AWSCURRENT", "arn:"]),
    )
    looks_like: list[st.SearchStrategy[str]] = []
    if "secret" in name or name in ("name", "resource_arn", "source_arn"):
        looks_like += [st.sampled_from(pools.names), st.sampled_from(pools.arns)]
    if "version" in name or "token" in name:
        looks_like += [st.sampled_from(pools.version_ids), st.uuids().map(str)]
    if "key" in name or "alias" in name or "arn" in name:
        looks_like.append(st.sampled_from(pools.key_ids))
    if "policy" in name:
        looks_like.append(
            st.sampled_from(
                ['{"Version":"2012-10-17","Statement":[]}', "{", "[]", '{"Statement":{"Effect":"Allow"}}']
            )
        )
    return st.one_of(*looks_like, plain, _huge_text()) if looks_like else st.one_of(plain, _huge_text())


def _scalar(f: FieldDescriptor, pools: Pools) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_STRING:
        return _text(f.name, pools)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64),
            st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(1, 70_000)),
        )
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    if f.type == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if f.type == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    return _integers(f.type)


def _sub(f: FieldDescriptor) -> Descriptor:
    assert f.message_type is not None
    return f.message_type


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and bool(_sub(f).GetOptions().map_entry)


def message_strategy(desc: Descriptor, pools: Pools, depth: int = 0) -> st.SearchStrategy[Message]:
    """A strategy of ``desc`` messages: every field present or not (oneofs: at most one member), each value
    drawn for its type (bounds, control characters, huge values, existing names), nested down to MAX_DEPTH."""
    cls = GetMessageClass(desc)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        taken_oneofs: set[str] = set()
        for f in desc.fields:
            oneof = f.containing_oneof
            if oneof is not None and oneof.name in taken_oneofs:
                continue
            if not draw(st.booleans()):
                continue
            if oneof is not None:
                taken_oneofs.add(oneof.name)
            _fill(draw, msg, f, pools, depth)
        return msg

    return build()


def _fill(draw: st.DrawFn, msg: Any, f: FieldDescriptor, pools: Pools, depth: int) -> None:
    if _is_map(f):
        key_f, value_f = _sub(f).fields_by_name["key"], _sub(f).fields_by_name["value"]
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_scalar(key_f, pools))
            if value_f.type == FieldDescriptor.TYPE_MESSAGE:
                if depth < MAX_DEPTH:
                    getattr(msg, f.name)[key].CopyFrom(
                        draw(message_strategy(_sub(value_f), pools, depth + 1))
                    )
            else:
                getattr(msg, f.name)[key] = draw(_scalar(value_f, pools))
        return
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        if depth >= MAX_DEPTH:
            return
        sub = message_strategy(_sub(f), pools, depth + 1)
        if f.is_repeated:
            for value in draw(st.lists(sub, max_size=4)):
                getattr(msg, f.name).add().CopyFrom(value)
        else:
            getattr(msg, f.name).CopyFrom(draw(sub))
        return
    if f.is_repeated:
        getattr(msg, f.name).extend(draw(st.lists(_scalar(f, pools), max_size=6)))
    else:
        setattr(msg, f.name, draw(_scalar(f, pools)))


def generate(desc: Descriptor, pools: Pools, count: int, run_seed: int) -> list[Message]:
    """``count`` requests of ``desc`` (fewer when the message has fewer distinct values), reproducible from
    ``run_seed``; no example database is read or written."""
    out: list[Message] = []

    @seed(run_seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(message_strategy(desc, pools))
    def collect(request: Message) -> None:
        out.append(request)

    collect()
    return out


# --- the driver ------------------------------------------------------------------------------------------


@dataclass
class Report:
    by_method: collections.Counter[str] = field(default_factory=collections.Counter)
    by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    #: A sample of the UNAVAILABLE answers (printed: a dependency down is not a failure by itself).
    unavailable: list[str] = field(default_factory=list)

    def render(self, seconds: float) -> str:
        lines = [f"fuzz: {sum(self.by_method.values())} requests in {seconds:.1f} s"]
        lines += [f"  {name:<60} {n}" for name, n in sorted(self.by_method.items())]
        lines.append("per status:")
        lines += [f"  {name:<20} {n}" for name, n in self.by_status.most_common()]
        lines += (
            ["UNAVAILABLE, first ones:", *(f"  {u}" for u in self.unavailable)] if self.unavailable else []
        )
        return "\n".join(lines)


def public_methods() -> list[MethodDescriptor]:
    return [m for service in PUBLIC_SERVICES for m in service.methods]


def _leaks(blob: bytes, canaries: Sequence[bytes]) -> bool:
    return any(c in blob for c in canaries)


async def _call(
    channels: dict[bool, grpc.aio.Channel],
    method: MethodDescriptor,
    request: Message,
    restricted: bool,
    canaries: Sequence[bytes],
    report: Report,
) -> None:
    out_cls = GetMessageClass(method.output_type)
    where = f"{method.name} as {'restricted' if restricted else 'admin'}"
    report.by_method[f"{method.containing_service.name}/{method.name}"] += 1
    try:
        if method.server_streaming:
            # A stream (WatchSecrets) that opens stays open: its first message is what a request decides.
            stream = channels[restricted].unary_stream(
                full_method(method),
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out_cls.FromString,
            )
            streaming = stream(request, timeout=30)
            try:
                first = await streaming.read()
            finally:
                streaming.cancel()
            response = out_cls() if first is grpc.aio.EOF else first
        else:
            call = channels[restricted].unary_unary(
                full_method(method),
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out_cls.FromString,
            )
            response = await call(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        report.by_status[exc.code().name] += 1
        if exc.code() == grpc.StatusCode.UNAVAILABLE and len(report.unavailable) < 20:
            report.unavailable.append(f"{where}: {exc.details()!r:.200} for {request!r:.200}")
        if exc.code() in BAD_CODES:
            report.failures.append(f"{where}: {exc.code().name} {exc.details()!r} for {request!r:.400}")
        text = (exc.details() or "").encode() + repr(exc.trailing_metadata()).encode()
        if _leaks(text, canaries):
            report.failures.append(f"{where}: error echoes a secret value: {exc.details()!r:.400}")
        return
    report.by_status["OK"] += 1
    if (restricted or method.name not in VALUE_METHODS) and _leaks(response.SerializeToString(), canaries):
        report.failures.append(f"{where}: response carries a secret value")


async def _plant(stack: ServiceStack, channel: grpc.aio.Channel, token: str) -> tuple[Pools, list[bytes]]:
    """Canary secrets (values the fuzzer must never see echoed) and share/ secrets the restricted user may
    read; returns the pools of existing names and the canary values."""
    stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
    canaries: list[bytes] = []
    names: list[str] = []
    arns: list[str] = []
    versions: list[str] = []
    for i in range(3):
        value = f"CANARY-{token}-{i}"
        canaries.append(value.encode())
        made = await stub.CreateSecret(
            sm.CreateSecretRequest(
                name=f"fuzz/canary-{i}", secret_string=value, client_request_token=str(uuid.uuid4())
            )
        )
        names.append(made.name)
        arns.append(made.arn)
        versions.append(made.version_id)
        binary = f"BINCANARY-{token}-{i}".encode()
        canaries.append(binary)
        put = await stub.PutSecretValue(
            sm.PutSecretValueRequest(
                secret_id=made.arn, secret_binary=binary, client_request_token=str(uuid.uuid4())
            )
        )
        versions.append(put.version_id)
    for i in range(2):
        made = await stub.CreateSecret(
            sm.CreateSecretRequest(
                name=f"share/s{i}", secret_string=f"shared-{i}", client_request_token=str(uuid.uuid4())
            )
        )
        names.append(made.name)
        arns.append(made.arn)
    keys = ["alias/aws/secretsmanager", "alias/missing", str(uuid.uuid4())]
    return Pools(tuple(names), tuple(arns), tuple(versions), tuple(keys)), canaries


async def _restricted_user(stack: ServiceStack) -> Credentials:
    """An IAM user that may only describe, list and read the share/ secrets."""
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                    "Resource": "arn:*:secretsmanager:*:*:secret:share/*",
                },
                {"Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": "*"},
            ],
        }
    )
    conn = await asyncpg.connect(stack.env["COFFER_DATABASE_URL"])
    try:
        akid, secret = await issue_user_key(conn, "fuzz-restricted", policy=policy)
    finally:
        await conn.close()
    return Credentials(akid, secret)


def _plan(pools: Pools, total: int) -> list[tuple[MethodDescriptor, Message]]:
    """``total`` requests spread evenly over every public RPC, in a fixed interleaved order."""
    methods = public_methods()
    per_method = -(-total // len(methods))
    queues: list[list[Message]] = []
    for index, method in enumerate(methods):
        made: list[Message] = []
        batch = 0
        while len(made) < per_method:
            got = generate(
                method.input_type, pools, min(BATCH, per_method - len(made)), index * 100_000 + batch
            )
            if not got:
                break
            made += got
            batch += 1
        queues.append(made)
    plan: list[tuple[MethodDescriptor, Message]] = []
    for i in range(per_method):
        plan += [(m, q[i % len(q)]) for m, q in zip(methods, queues, strict=True) if q]
    return plan[:total]


async def run_fuzz(stack: ServiceStack, total: int, log: Callable[[str], None] = print) -> Report:
    assert stack.admin is not None and stack.gateway is not None
    endpoint = f"127.0.0.1:{stack.gateway.port}"
    creds = grpc.ssl_channel_credentials(root_certificates=stack.ca_file.read_bytes())
    restricted = await _restricted_user(stack)
    report = Report()
    started = time.monotonic()
    opts = name_options(GATEWAY_HOST)
    async with (
        grpc.aio.secure_channel(
            endpoint, creds, options=opts, interceptors=[SigningInterceptor(stack.admin)]
        ) as admin,
        grpc.aio.secure_channel(
            endpoint, creds, options=opts, interceptors=[SigningInterceptor(restricted)]
        ) as limited,
    ):
        pools, canaries = await _plant(stack, admin, uuid.uuid4().hex)
        plan = _plan(pools, total)
        channels = {False: admin, True: limited}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(plan)):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                method, request = plan[i]
                await _call(channels, method, request, i % RESTRICTED_EVERY == 0, canaries, report)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        # The services still serve: a new secret is written (store → kms) and read back, health SERVING. Under
        # a new KMS key: the fuzzer may have disabled, scheduled for deletion or re-policied the default one.
        key = await kms_pb2_grpc.KeyManagementServiceStub(admin).CreateKey(
            kms_pb2.CreateKeyRequest(), timeout=30
        )
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(admin)
        after = await stub.CreateSecret(
            sm.CreateSecretRequest(
                name=f"after/{uuid.uuid4().hex}",
                secret_string="still-here",
                kms_key_id=key.key_metadata.arn,
                client_request_token=str(uuid.uuid4()),
            ),
            timeout=30,
        )
        got = await stub.GetSecretValue(sm.GetSecretValueRequest(secret_id=after.arn), timeout=30)
        if got.secret_string != "still-here":
            report.failures.append("the stack no longer reads back what it stores")
        health = await health_pb2_grpc.HealthStub(admin).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        if health.status != health_pb2.HealthCheckResponse.SERVING:
            report.failures.append(f"gateway health {health.status}")
    log(report.render(time.monotonic() - started))
    return report


async def test_fuzz_every_public_rpc_through_the_gateway(fuzz_stack: ServiceStack) -> None:
    report = await run_fuzz(fuzz_stack, REQUESTS)
    assert sum(report.by_method.values()) == REQUESTS
    assert len(report.by_method) == len(public_methods())  # every public RPC was called
    assert not report.failures, "\n".join(report.failures[:50])


def test_generated_requests_are_deterministic_and_cover_field_kinds() -> None:
    pools = Pools(("n",), ("arn:x",), ("v",), ("alias/k",))
    desc = sm.CreateSecretRequest.DESCRIPTOR
    first: list[Any] = generate(desc, pools, 50, 7)
    assert [m.SerializeToString() for m in first] == [
        m.SerializeToString() for m in generate(desc, pools, 50, 7)
    ]
    assert any(m.HasField("secret_string") for m in first) and any(len(m.tags) > 0 for m in first)
