"""Two store replicas on one database behind one gateway (issue 11): the gateway's store address lists both
(``COFFER_STORE_ADDR=ip:port,ip:port``), its channel spreads calls over them round-robin, and when one
replica goes away the calls go on on the other — a client that retries as AWS's SDKs do sees no failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coffer.client import AsyncCofferClient
from coffer.core import errors
from coffer.gateway.__main__ import serve as serve_gateway
from coffer.rpc.channel import spread_target
from coffer.store.__main__ import serve as serve_store
from coffer.testing.stack import provisioned_stack
from coffer.testing.wait import eventually

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


DENY_READS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
    }
)


async def test_a_change_made_through_one_replica_reaches_the_caches_of_the_others(
    tmp_path: Path, pki_dir: Path, database_url: str
) -> None:
    """Gateway A on store 1, gateway B on store 2, one database: B has app's key and policies in its caches;
    a deny policy, then the key's deactivation, made through A, are in force on B within seconds."""
    services = await provisioned_stack(home=tmp_path, pki_dir=pki_dir, database_url=database_url)
    try:
        await services.start_kms()
        first = await services.start_store()
        second = await serve_store(services.settings("store", COFFER_STORE_ADDR="127.0.0.1:0"))
        try:
            gateway_a = await services.start_gateway()
            gateway_b = await serve_gateway(
                services.settings(
                    "gateway",
                    COFFER_GATEWAY_ADDR="127.0.0.1:0",
                    COFFER_AWS_ADDR="",
                    COFFER_STORE_ADDR=f"127.0.0.1:{second.port}",
                )
            )
            try:
                assert services.admin is not None and first.port != second.port
                admin_a = AsyncCofferClient(f"127.0.0.1:{gateway_a.port}", services.ca_file, services.admin)
                app = await services.credential("user/app")  # an allow-all inline policy
                app_b = AsyncCofferClient(
                    f"127.0.0.1:{gateway_b.port}", services.ca_file, app, max_attempts=1
                )
                await admin_a.create_secret(name="replicas/cached", secret_string="v1")
                for _ in range(3):  # B resolves app's key and policies and keeps them
                    assert (await app_b.get_secret_value(secret_id="replicas/cached")).secret_string == "v1"

                async def app_reads_on_b() -> str:
                    try:
                        await app_b.get_secret_value(secret_id="replicas/cached")
                    except errors.CofferError as exc:
                        return exc.code
                    return "ok"

                await admin_a.iam.put_user_policy(
                    user_name="app", policy_name="deny", policy_document=DENY_READS
                )
                await eventually(app_reads_on_b, until=lambda r: r == "AccessDeniedException", timeout=5)
                await admin_a.iam.delete_user_policy(user_name="app", policy_name="deny")
                await eventually(app_reads_on_b, until=lambda r: r == "ok", timeout=5)
                await admin_a.iam.update_access_key(
                    user_name="app", access_key_id=app.access_key_id, status="Inactive"
                )
                refused = await eventually(app_reads_on_b, until=lambda r: r != "ok", timeout=5)
                assert refused == "InvalidClientTokenId", refused  # as on a single gateway
                await admin_a.close()
                await app_b.close()
            finally:
                await gateway_b.aclose(grace=0.5)
        finally:
            await second.aclose()
    finally:
        await services.aclose()
