"""Listening with an aiohttp application (the metrics port, the AWS-protocol endpoint, the web console): one
way to set a runner up on ``host:port`` and learn the port it bound."""

from __future__ import annotations

import ssl

from aiohttp import web

from coffer.settings import split_address


async def listen(
    runner: web.AppRunner, bind: str, *, ssl_context: ssl.SSLContext | None = None, backlog: int = 128
) -> int:
    """Set ``runner`` up and listen on ``bind`` (``host:port``; port 0: any free port), with TLS when
    ``ssl_context``; the port bound. When it cannot listen (a bad address, a taken port) the runner is
    cleaned up and the error raised."""
    await runner.setup()
    try:
        host, wanted = split_address(bind)
        site = web.TCPSite(runner, host, wanted, ssl_context=ssl_context, backlog=backlog)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    sockets = getattr(site._server, "sockets", None) or ()
    return int(sockets[0].getsockname()[1]) if sockets else wanted
