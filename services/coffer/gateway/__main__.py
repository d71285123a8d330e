"""The gateway process (composition root): settings → credentials, channels to store and kms → public server.

The public port speaks TLS (server certificate "gateway"; clients present no certificate) and every call but
the health check must carry ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from coffer import logs
from coffer.api.kms.v1 import kms_pb2_grpc
from coffer.api.store.v1 import store_pb2_grpc
from coffer.gateway.app import GatewayApp
from coffer.gateway.audit import StructlogAudit
from coffer.gateway.auth import BearerAuthenticator, CredentialStore
from coffer.gateway.authz import Authorization
from coffer.gateway.servicer import add_gateway_services
from coffer.rpc.channel import secure_channel
from coffer.rpc.server import RunningServer, service_main, start_server
from coffer.rpc.tls import TlsFiles
from coffer.settings import Settings

log = logs.get_logger("coffer.gateway")


@dataclass
class GatewayRuntime:
    server: RunningServer
    store_channel: grpc.aio.Channel
    kms_channel: grpc.aio.Channel
    credentials: CredentialStore

    @property
    def port(self) -> int:
        return self.server.port

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Stop serving (health goes NOT_SERVING first, in-flight calls finish), then close the channels."""
        try:
            await self.server.stop(grace)
        finally:
            try:
                await self.store_channel.close()
            finally:
                await self.kms_channel.close()


async def serve(settings: Settings) -> GatewayRuntime:
    credentials = CredentialStore(settings.credentials_file)
    internal_tls = TlsFiles.for_identity(settings.pki_dir, "gateway")
    store_channel = secure_channel(settings.store_addr, internal_tls, server_name="store")
    kms_channel = secure_channel(settings.kms_addr, internal_tls, server_name="kms")
    authorize = Authorization(settings.operator_principals)
    app = GatewayApp(authorize=authorize, audit=StructlogAudit(), random=secrets.SystemRandom())
    store = store_pb2_grpc.SecretStoreServiceStub(store_channel)
    kms = kms_pb2_grpc.KeyManagementServiceStub(kms_channel)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        return add_gateway_services(server, app, store=store, kms=kms)

    try:
        server = await start_server(
            service="gateway",
            bind=settings.gateway_addr,
            tls=TlsFiles.for_identity(settings.pki_dir, "gateway"),
            register=register,
            peers=None,
            authenticator=BearerAuthenticator(credentials),
            require_client_cert=False,
        )
    except BaseException:
        await store_channel.close()
        await kms_channel.close()
        raise
    log.info(
        "gateway.ready",
        port=server.port,
        store=settings.store_addr,
        kms=settings.kms_addr,
        credentials=len(credentials),
    )
    return GatewayRuntime(
        server=server, store_channel=store_channel, kms_channel=kms_channel, credentials=credentials
    )


def main() -> None:
    service_main("gateway", serve)


if __name__ == "__main__":
    main()
