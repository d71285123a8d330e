"""Two store replicas on one database behind one gateway (issue 11): the gateway's store address lists both
(``COFFER_STORE_ADDR=ip:port,ip:port``), its channel spreads calls over them round-robin, and when one
replica goes away the calls go on on the other — a client that retries as AWS's SDKs do sees no failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffer.client import AsyncCofferClient
from coffer.rpc.channel import spread_target
from coffer.store.__main__ import serve as serve_store
from coffer.testing.stack import provisioned_stack

pytestmark = pytest.mark.integration


def test_targets_of_one_or_several_replicas() -> None:
    assert spread_target("127.0.0.1:7444") == ("127.0.0.1:7444", ())
    target, options = spread_target("127.0.0.1:7444, 127.0.0.1:7454")
    assert target == "ipv4:127.0.0.1:7444,127.0.0.1:7454"
    assert options and "round_robin" in options[0][1]
    assert spread_target("dns:///store.coffer.svc:7444")[1] == options
    for bad in ("store-a:7444,store-b:7444", "127.0.0.1,127.0.0.2:1"):
        with pytest.raises(ValueError, match=r"replicas|port"):
            spread_target(bad)


async def test_the_gateway_spreads_over_two_stores_and_survives_losing_one(
    tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        await services.start_kms()
        first = await services.start_store()
        second = await serve_store(services.settings("store", COFFER_STORE_ADDR="127.0.0.1:0"))
        try:
            both = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"
            services.env["COFFER_STORE_ADDR"] = both
            assert services.kms is not None  # it calls the store too (principals, audit): both replicas
            await services.kms.use_store(both, services.pki_dir)
            gateway = await services.start_gateway()
            assert services.admin is not None
            client = AsyncCofferClient(
                f"127.0.0.1:{gateway.port}", services.ca_file, services.admin, max_attempts=3
            )
            await client.create_secret(name="replicas/one", secret_string="v1")
            first.kms.cache.clear()
            second.kms.cache.clear()
            for _ in range(10):
                assert (await client.get_secret_value(secret_id="replicas/one")).secret_string == "v1"
            # each replica served reads: each holds the secret's data key now
            assert len(first.kms.cache) >= 1 and len(second.kms.cache) >= 1

            await first.aclose()  # one replica gone: every call still succeeds (retried where it must)
            for i in range(20):
                await client.put_secret_value(secret_id="replicas/one", secret_string=f"v{i + 2}")
                assert (await client.get_secret_value(secret_id="replicas/one")).secret_string == f"v{i + 2}"
            await client.close()
        finally:
            await second.aclose()
    finally:
        await services.aclose()
