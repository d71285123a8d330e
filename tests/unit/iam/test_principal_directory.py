"""The principal directory's pure parts: the record's wire form, the Principal built from it, the cache's
invalidation rules, the change notifications, and the gateway's authenticator over a fake directory."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from coffer.api.secrets.v1 import secrets_pb2 as sm
from coffer.client.credentials import Credentials, signed_metadata
from coffer.core import errors
from coffer.core.principal import PrincipalKind
from coffer.gateway.auth import SignatureAuthenticator, source_ip
from coffer.principal_directory import AccessKeyRecord, Resolved, ResolvedCache, from_proto, to_proto
from coffer.rpc import context as ctx
from coffer.store.iam_directory import parse_change

ADMIN = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
CREDS = Credentials("AKIA" + "A" * 16, "secret")


def _user(akid: str = CREDS.access_key_id, **kw: Any) -> AccessKeyRecord:
    return AccessKeyRecord(
        access_key_id=akid,
        principal_arn="arn:aws:iam::000000000000:user/alice",
        account_id="000000000000",
        kind=PrincipalKind.USER,
        name="alice",
        unique_id="AIDA" + "X" * 17,
        signing_key=CREDS.signing_key,
        policies=(("Admin", ADMIN),),
        tags={"team": "a"},
        **kw,
    )


def _session() -> AccessKeyRecord:
    return AccessKeyRecord(
        access_key_id="ASIA" + "S" * 16,
        principal_arn="arn:aws:sts::000000000000:assumed-role/r/s",
        account_id="000000000000",
        kind=PrincipalKind.ASSUMED_ROLE,
        name="r",
        unique_id="AROAXXXX:s",
        signing_key=b"k" * 32,
        role_arn="arn:aws:iam::000000000000:role/r",
        session_name="s",
        expires=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        issued=dt.datetime(2029, 12, 31, tzinfo=dt.UTC),
        token_sha256=b"t" * 32,
    )


def test_records_round_trip_the_wire_form() -> None:
    for record in (_user(), _session()):
        assert from_proto(to_proto(record)) == record


def test_the_principal_carries_compiled_policies_and_session_fields() -> None:
    principal = _session().principal()
    assert (
        principal.kind is PrincipalKind.ASSUMED_ROLE
        and principal.role_arn == "arn:aws:iam::000000000000:role/r"
    )
    assert principal.session_issued == dt.datetime(2029, 12, 31, tzinfo=dt.UTC)
    user = _user().principal()
    assert [p.name for p in user.policies] == ["Admin"] and user.tags == {"team": "a"}
    assert user.access_key_id == CREDS.access_key_id


def test_the_cache_drops_keys_principals_and_a_roles_sessions() -> None:
    cache = ResolvedCache()
    user, session = _user(), _session()
    cache.put(user, cache.generation)
    cache.put(session, cache.generation)
    assert cache.drop([], ["arn:aws:iam::000000000000:role/r"]) == 1  # the role's sessions go
    assert cache.get(session.access_key_id) is None and cache.get(user.access_key_id) is not None
    assert cache.drop([user.access_key_id], []) == 1 and len(cache) == 0


def test_an_answer_that_raced_a_change_is_not_cached() -> None:
    cache = ResolvedCache()
    generation = cache.generation
    cache.drop(["AKIA" + "Z" * 16], [])  # a change arrives while the lookup is in flight
    cache.put(_user(), generation)
    assert cache.get(CREDS.access_key_id) is None


def test_change_notifications() -> None:
    assert parse_change('{"access_key_ids": ["A"], "principal_arns": ["arn"]}') == (["A"], ["arn"])
    assert parse_change('{"access_key_ids": ["A"]}') == (["A"], [])
    assert parse_change("not json") is None and parse_change('["x"]') is None
    assert parse_change('{"reset": true, "access_key_ids": [], "principal_arns": []}') is None  # drop all


def test_source_ip_of_grpc_peers() -> None:
    assert source_ip("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert source_ip("ipv6:[::1]:5555") == "::1"
    assert source_ip("unix:/tmp/x") is None and source_ip(None) is None


class _Directory:
    def __init__(self, record: AccessKeyRecord | None) -> None:
        self.record = record

    async def resolve(self, access_key_id: str) -> Resolved | None:
        if self.record is None or self.record.access_key_id != access_key_id:
            return None
        return Resolved(self.record, self.record.principal())


class _Context:
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:192.0.2.7:4242"


METHOD = "/coffer.api.secrets.v1.SecretsManagerService/GetSecretValue"


async def test_the_authenticator_returns_the_principal_and_binds_address_and_agent() -> None:
    request = sm.GetSecretValueRequest(secret_id="x")
    metadata = [*signed_metadata(CREDS, METHOD, request), ("user-agent", "coffer-test/1")]
    auth = SignatureAuthenticator(_Directory(_user()))  # type: ignore[arg-type]
    principal = await auth(_Context(metadata), METHOD, request)
    assert principal.arn == "arn:aws:iam::000000000000:user/alice"
    assert ctx.current_source_ip() == "192.0.2.7" and ctx.current_user_agent() == "coffer-test/1"


async def test_the_authenticator_fails_closed() -> None:
    request = sm.GetSecretValueRequest(secret_id="x")
    signed = signed_metadata(CREDS, METHOD, request)
    auth = SignatureAuthenticator(_Directory(_user()))  # type: ignore[arg-type]
    with pytest.raises(errors.Unauthenticated) as info:  # a call whose request it cannot see
        await auth(_Context(signed), METHOD, None)
    assert info.value.code == "IncompleteSignature"
    with pytest.raises(errors.Unauthenticated) as info:
        await auth(_Context([]), METHOD, request)
    assert info.value.code == "MissingAuthenticationTokenException"
    unknown = SignatureAuthenticator(_Directory(None))  # type: ignore[arg-type]
    with pytest.raises(errors.Unauthenticated) as info:
        await unknown(_Context(signed), METHOD, request)
    assert info.value.code == "UnrecognizedClientException"
    inactive = SignatureAuthenticator(_Directory(_user(status="Inactive")))  # type: ignore[arg-type]
    with pytest.raises(errors.Unauthenticated) as info:
        await inactive(_Context(signed), METHOD, request)
    assert info.value.code == "InvalidClientTokenId"
    late = SignatureAuthenticator(_Directory(_user()), clock=lambda: time.time() + 301)  # type: ignore[arg-type]
    with pytest.raises(errors.Unauthenticated) as info:
        await late(_Context(signed), METHOD, request)
    assert info.value.code == "InvalidSignatureException"
