"""The gateway forwards the public replication operations to the store (single region: a region that is not
a configured peer reports Failed; StopReplicationToReplica on a primary is refused)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.api.secrets.v1 import secrets_pb2_grpc
from coffer.rpc.tls import GATEWAY_HOST, name_options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_replication_operations_are_forwarded(stack: Any) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=stack.ca_file.read_bytes())
    auth: tuple[tuple[str, str], ...] = ()  # the channel signs each call
    async with grpc.aio.secure_channel(
        stack.endpoint, creds, options=name_options(GATEWAY_HOST), interceptors=[stack.signer()]
    ) as channel:
        stub = secrets_pb2_grpc.SecretsManagerServiceStub(channel)
        created = await stub.CreateSecret(
            sm.CreateSecretRequest(
                name="gw/replicated",
                client_request_token=str(uuid.uuid4()),
                secret_string="v",
                add_replica_regions=[sm.ReplicaRegion(region="local-7")],
            ),
            metadata=auth,
        )
        described = await stub.DescribeSecret(sm.DescribeSecretRequest(secret_id=created.arn), metadata=auth)
        assert described.primary_region == "local-1"
        [status] = described.replication_status
        assert (status.region, status.status) == ("local-7", "Failed")
        assert "local-7" in status.status_message

        added = await stub.ReplicateSecretToRegions(
            sm.ReplicateSecretToRegionsRequest(
                secret_id="gw/replicated", add_replica_regions=[sm.ReplicaRegion(region="local-8")]
            ),
            metadata=auth,
        )
        assert added.arn == created.arn
        assert sorted(s.region for s in added.replication_status) == ["local-7", "local-8"]

        removed = await stub.RemoveRegionsFromReplication(
            sm.RemoveRegionsFromReplicationRequest(
                secret_id="gw/replicated", remove_replica_regions=["local-7", "local-8"]
            ),
            metadata=auth,
        )
        assert (removed.arn, list(removed.replication_status)) == (created.arn, [])

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.StopReplicationToReplica(
                sm.StopReplicationToReplicaRequest(secret_id="gw/replicated"), metadata=auth
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # InvalidRequestException
        assert "is not a replica" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ReplicateSecretToRegions(
                sm.ReplicateSecretToRegionsRequest(
                    secret_id="gw/replicated", add_replica_regions=[sm.ReplicaRegion(region="local-1")]
                ),
                metadata=auth,
            )
        assert info.value.details() == "Invalid replica region."
