"""The gateway process (composition root): settings → credentials, channels to store and kms → public server.

The public port speaks TLS (server certificate "gateway", named ``gateway.coffer.internal``; clients present
no certificate) and every call but the health check must be signed with an access key (``authorization:
COFFER1-HMAC-SHA256 …``, verified against the store's principal directory: ``coffer.gateway.auth``). Calls
forwarded to the store and the kms carry the caller's principal with an assertion signed by the gateway's
principal-signing key (``coffer.rpc.assertions``).

The public port is bounded (``PUBLIC_LIMITS``): a request message over ``MAX_REQUEST_BYTES`` is refused by
gRPC with RESOURCE_EXHAUSTED while it arrives, before it is parsed, logged or authenticated (gRPC reads and
deserializes a request before any handler code runs, so this cap is what bounds the work an unauthenticated
caller can cause; the signature is checked before the request is used). A connection carries at most
``MAX_STREAMS_PER_CONNECTION`` concurrent calls, an idle connection is closed, clients that ping too often are
disconnected, and at most ``MAX_CONCURRENT_RPCS`` calls are in progress in all (more are refused with
RESOURCE_EXHAUSTED). Calls over their account's or their principal's request rate (``COFFER_THROTTLE*``,
``coffer.core.throttle``; enforced by each gateway replica on its own) are refused with ThrottlingException.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from coffer import logs
from coffer.api.audit.v1 import audit_pb2_grpc
from coffer.api.iam.v1 import directory_pb2_grpc, iam_pb2_grpc
from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.api.store.v1 import store_pb2_grpc
from coffer.api.usage.v1 import usage_pb2_grpc
from coffer.audit import StructlogAudit
from coffer.audit_trail import AppendTrail, PublicAudit
from coffer.core.throttle import Throttle, rate_groups
from coffer.gateway.app import GatewayApp
from coffer.gateway.auth import SignatureAuthenticator
from coffer.gateway.authz import Authorization
from coffer.gateway.aws.server import AwsServer, start_aws_server
from coffer.gateway.console.server import ConsoleServer, start_console_server
from coffer.gateway.servicer import (
    Downstream,
    add_gateway_services,
    gateway_operations,
    public_event_sources,
)
from coffer.pki import SIGNING_KEY
from coffer.principal_directory import DirectoryCache
from coffer.rpc.assertions import PrincipalSigner
from coffer.rpc.channel import secure_channel
from coffer.rpc.server import RunningServer, service_main, start_server
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings

log = logs.get_logger("coffer.gateway")

#: A secret value is at most 64 KiB (SecretString or SecretBinary, as in AWS); the rest of the largest request
#: (tags, description, filters) is far smaller, so a whole request fits well within 256 KiB.
MAX_REQUEST_BYTES = 256 * 1024
#: Calls one connection may carry at once. Not lower: grpc's server refuses (REFUSED_STREAM) a few of a burst
#: above this limit on an established connection even though clients know it, so a client's burst of 150 calls
#: failed at 100 (measured); the total is bounded by MAX_CONCURRENT_RPCS anyway.
MAX_STREAMS_PER_CONNECTION = 1000
MAX_CONCURRENT_RPCS = 512
#: How long start-up waits for the store's principal-change stream (calls are still verified meanwhile,
#: each access key then costing a directory lookup).
DIRECTORY_WAIT_SECONDS = 5.0
PUBLIC_LIMITS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
    ("grpc.max_connection_idle_ms", 5 * 60 * 1000),
    # keepalive enforcement: a client pinging more often than once a minute without calls is disconnected
    ("grpc.http2.min_ping_interval_without_data_ms", 60 * 1000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_metadata_size", 16 * 1024),
)


@dataclass
class GatewayRuntime:
    server: RunningServer
    store_channel: grpc.aio.Channel
    kms_channel: grpc.aio.Channel
    directory: DirectoryCache
    audit_trail: AppendTrail | None = None
    #: The AWS-protocol endpoint (``COFFER_AWS_ADDR``), when served.
    aws: AwsServer | None = None
    #: The web console (``COFFER_CONSOLE_ADDR``), when served.
    console: ConsoleServer | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def aws_port(self) -> int | None:
        return self.aws.port if self.aws is not None else None

    @property
    def console_port(self) -> int | None:
        return self.console.port if self.console is not None else None

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop serving (health goes NOT_SERVING first, in-flight calls finish), then close the channels."""
        try:
            try:
                if self.console is not None:
                    await self.console.stop()
                if self.aws is not None:
                    await self.aws.stop()
            finally:
                await self.server.stop(grace)
        finally:
            await self.directory.aclose()
            try:
                await self.store_channel.close()
            finally:
                await self.kms_channel.close()
                if self.audit_trail is not None:
                    await self.audit_trail.aclose()


async def serve(settings: Settings) -> GatewayRuntime:
    internal_tls = TlsFiles.for_identity(settings.pki_dir, "gateway")
    signer = PrincipalSigner.from_file(settings.pki_dir / SIGNING_KEY)
    store_channel = secure_channel(settings.store_addr, internal_tls, server_name="store", signer=signer)
    kms_channel = secure_channel(settings.kms_addr, internal_tls, server_name="kms", signer=signer)
    authorize = Authorization(settings.operator_principals)
    # The events of the calls the gateway refuses or answers itself go to the store's audit trail.
    audit_trail = AppendTrail(
        lambda address: secure_channel(address, internal_tls, server_name="store"),
        settings.store_addr,
        name="gateway-audit-append",
    )
    app = GatewayApp(
        authorize=authorize,
        audit=StructlogAudit(),
        random=secrets.SystemRandom(),
        trail=None if settings.unsafe_bench_bypass else audit_trail,
        region=settings.region,
        throttle=Throttle(
            rate_groups(dict(settings.throttle_rates)),
            principal_share=settings.throttle_principal_share,
            burst_seconds=settings.throttle_burst_seconds,
        )
        if settings.throttle
        else None,
    )
    store = store_pb2_grpc.SecretStoreServiceStub(store_channel)
    kms = kms_pb2_grpc.KeyManagementServiceStub(kms_channel)
    seal = kms_pb2_grpc.SealServiceStub(kms_channel)
    # IAM, STS and Organizations are served by the store.
    others = {
        Downstream.IAM: iam_pb2_grpc.IdentityManagementServiceStub(store_channel),
        Downstream.STS: iam_pb2_grpc.SecurityTokenServiceStub(store_channel),
        Downstream.ORGANIZATIONS: iam_pb2_grpc.OrganizationsServiceStub(store_channel),
        Downstream.USAGE: usage_pb2_grpc.UsageServiceStub(store_channel),  # the store serves metering
        Downstream.AUDIT: audit_pb2_grpc.AuditServiceStub(store_channel),  # and the audit trail
    }
    directory = DirectoryCache(
        directory_pb2_grpc.PrincipalDirectoryServiceStub(store_channel), name="gateway"
    )
    directory.start()
    if not await directory.wait_following(within=DIRECTORY_WAIT_SECONDS):
        log.warning("gateway.iam_directory_not_following", store=settings.store_addr)

    # One table of operations serves every front end (gRPC here; the AWS-protocol endpoint beside it).
    operations = gateway_operations(app, store=store, kms=kms, seal=seal, others=others)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        return add_gateway_services(server, operations=operations)

    # Calls refused before they are admitted (authentication failures) are recorded here, best effort; the
    # rest by the service that serves (or the GatewayApp, for its own answers). Both front ends share it.
    public_audit = (
        None
        if settings.unsafe_bench_bypass
        else PublicAudit(
            trail=audit_trail,
            sources=public_event_sources(),
            region=settings.region,
            unadmitted_only=True,
            fail_closed=False,
        )
    )
    aws: AwsServer | None = None
    console: ConsoleServer | None = None
    try:
        if settings.aws_addr:
            aws = await start_aws_server(
                bind=settings.aws_addr,
                tls=TlsFiles.for_identity(settings.pki_dir, "gateway"),
                operations=operations,
                directory=directory,
                region=settings.region,
                public_audit=public_audit,
            )
        if settings.console_addr:
            # The web console: the same operations, as the signed-in principal (issue 15).
            console = await start_console_server(
                bind=settings.console_addr,
                tls=TlsFiles.for_identity(settings.pki_dir, "gateway"),
                operations=operations,
                directory=directory,
                region=settings.region,
                trail=None if settings.unsafe_bench_bypass else audit_trail,
            )
        server = await start_server(
            service="gateway",
            bind=settings.gateway_addr,
            health_bind=settings.health_addr or None,
            metrics_bind=settings.metrics_addr or None,
            tls=TlsFiles.for_identity(settings.pki_dir, "gateway"),
            register=register,
            peers=None,
            authenticator=SignatureAuthenticator(directory),
            require_client_cert=False,
            options=PUBLIC_LIMITS,
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
            public_audit=public_audit,
        )
    except BaseException:
        if console is not None:
            await console.stop()
        if aws is not None:
            await aws.stop()
        await directory.aclose()
        await audit_trail.aclose()
        await store_channel.close()
        await kms_channel.close()
        raise
    log.info(
        "gateway.ready",
        port=server.port,
        aws_port=aws.port if aws is not None else None,
        console_port=console.port if console is not None else None,
        store=settings.store_addr,
        kms=settings.kms_addr,
    )
    return GatewayRuntime(
        server=server,
        store_channel=store_channel,
        kms_channel=kms_channel,
        directory=directory,
        audit_trail=audit_trail,
        aws=aws,
        console=console,
    )


def main() -> None:
    service_main("gateway", serve)


if __name__ == "__main__":
    main()
