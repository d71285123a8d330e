"""A fault-injecting TCP proxy for the chaos tests (issue 13): placed between two parts of a deployment (a
service and its PostgreSQL, the store and the kms, two regions), it passes bytes both ways and, on command,
delays them, drops them, resets every connection, or partitions the link.

- ``PASS``: bytes flow unchanged.
- ``delay(seconds)``: every chunk waits ``seconds`` before it is forwarded (both directions; order kept).
- ``DROP``: connections stay open but nothing is forwarded (a black hole: the peer sees a hang, as with
  packets lost on a dead route); bytes read meanwhile are discarded.
- ``reset()``: every open connection is closed at once with a TCP RST (SO_LINGER 0); new ones pass.
- ``PARTITION``: open connections are reset and new ones are reset as soon as they are accepted (a peer that
  is down or unreachable with an immediate refusal).

It runs on the caller's event loop (``start``/``stop``); tests use it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from enum import Enum

#: Bytes read per chunk.
CHUNK = 65536


class Mode(Enum):
    PASS = "pass"
    DROP = "drop"
    PARTITION = "partition"


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN (the peer sees "connection reset")."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1 (``port``; any free one by default), forwards to ``target_host:target_port``."""

    target_host: str
    target_port: int
    port: int = 0
    mode: Mode = Mode.PASS
    delay_seconds: float = 0.0
    #: Connections accepted so far (counted, for tests that check the link was used).
    accepted: int = 0
    _server: asyncio.Server | None = None
    _links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- faults -------------------------------------------------------------------------------------------

    def passthrough(self) -> None:
        self.mode, self.delay_seconds = Mode.PASS, 0.0

    def delay(self, seconds: float) -> None:
        self.mode, self.delay_seconds = Mode.PASS, seconds

    def drop(self) -> None:
        self.mode = Mode.DROP

    def partition(self) -> None:
        self.mode = Mode.PARTITION
        self.reset()

    def reset(self) -> None:
        """Reset every open connection (both sides)."""
        for client, upstream in list(self._links):
            _abort(client)
            _abort(upstream)
        self._links.clear()

    # -- plumbing -----------------------------------------------------------------------------------------

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode is Mode.PARTITION:
            _abort(client_writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _abort(client_writer)
            return
        link = (client_writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.ensure_future(self._pump(client_reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, client_writer)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._links.discard(link)
            for writer in link:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                if self.mode is Mode.DROP:
                    continue  # read and thrown away: the other side waits for an answer that never comes
                if self.delay_seconds > 0:
                    await asyncio.sleep(self.delay_seconds)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return
