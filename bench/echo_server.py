"""A bare grpc.aio echo server (TLS, same certificates as the stack): the baseline a Coffer call is compared
with. No protoc: bytes in, the same bytes out."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc

from coffer.rpc.server import wait_for_signal
from coffer.rpc.tls import TlsFiles, server_credentials

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port_file: Path, pki_dir: Path) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(TlsFiles.for_identity(pki_dir, "gateway"), require_client_cert=False),
    )
    await server.start()
    port_file.write_text(str(port))  # noqa: ASYNC240 - once, at start-up
    await wait_for_signal()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--pki-dir", type=Path, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port_file, args.pki_dir))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.port_file, args.pki_dir))


if __name__ == "__main__":
    main()
