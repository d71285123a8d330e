"""Coffer's servers accept the keepalive pings Coffer's channels send under a long-lived stream.

With grpc's server default (at most one ping per five minutes without data), a kms answered the store's pings
on its idle key-change watch with GOAWAY "too_many_pings" after about two minutes: the watch dropped, and a
call racing it on that connection could fail with UNAVAILABLE. Reproduced by hand with a kms and a store left
idle for 130 s (the GOAWAY and a broken watch before the change, neither after it); a test that long is not
worth its two minutes in every run, so this one checks the settings that make the difference."""

from __future__ import annotations

from coffer.rpc.channel import KEEPALIVE_MS
from coffer.rpc.server import SERVER_DEFAULTS


def test_servers_accept_pings_as_often_as_coffer_channels_send_them() -> None:
    accepted_every_ms = dict(SERVER_DEFAULTS)["grpc.http2.min_ping_interval_without_data_ms"]
    assert accepted_every_ms <= KEEPALIVE_MS
