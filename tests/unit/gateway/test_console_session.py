"""The web console's sessions and CSRF protection (``coffer.gateway.console``): the pure session store and
sign-in tokens, then the console's pipeline with a fake directory and fake operations (no services, plain
HTTP test server: cookies are sent by hand): sign-in checks the secret access key, the session cookie's
flags, a POST without (or with a wrong) CSRF token never reaches an operation, a deactivated key or a
signed-out session is refused, the caller is bound while the operation runs, and every answer carries the
strict Content-Security-Policy and ``Cache-Control: no-store``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer

from coffer.api.secrets.v1 import secrets_pb2
from coffer.core import errors
from coffer.core.principal import admin_policy
from coffer.gateway.console import server as console_server
from coffer.gateway.console.session import SessionStore, SigninLimiter, SigninTokens, same_origin
from coffer.gateway.servicer import ROUTES, Operation
from coffer.rpc import context as ctx
from tests.unit.gateway.fakes import ALICE_ARN, FakeDirectory, FakeTrail, Seen, alice_record

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ARN = ALICE_ARN
SM = "/coffer.api.secrets.v1.SecretsManagerService/"
SECRET_ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbCdEf"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def counter_tokens() -> Any:
    count = iter(range(1_000_000))
    return lambda _n: f"tok{next(count)}"


# -- the pure parts ---------------------------------------------------------------------------------------


def test_a_session_ends_when_idle_or_old_and_on_delete() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, lifetime=100, idle=30)
    sid, session = store.create(access_key_id=AKID, principal_arn=ARN)
    assert store.get(sid) is session and session.csrf_token != sid
    clock.now += 29
    assert store.get(sid) is session  # used: the idle clock restarts
    clock.now += 29
    assert store.get(sid) is session
    clock.now += 30
    assert store.get(sid) is None and len(store) == 0  # idle too long: forgotten
    sid, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    for _ in range(4):
        clock.now += 24.5
        assert store.get(sid) is not None
    clock.now += 2
    assert store.get(sid) is None  # 100 s old: over, however busy
    sid, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    assert store.delete(sid) and store.get(sid) is None and not store.delete(sid)
    assert store.get("") is None and store.get("unknown") is None


def test_temporary_credentials_end_the_session_first_and_a_key_ends_all_its_sessions() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, lifetime=3600)
    sid, session = store.create(access_key_id="ASIAX", principal_arn=ARN, not_after=clock.now + 60)
    assert store.remaining(session) == 60
    clock.now += 60
    assert store.get(sid) is None
    a, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    b, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    c, _ = store.create(access_key_id="AKIAOTHER", principal_arn=ARN)
    assert store.delete_key(AKID) == 2
    assert store.get(a) is None and store.get(b) is None and store.get(c) is not None


def test_the_store_is_bounded_and_keys_sessions_by_a_digest() -> None:
    store = SessionStore(clock=Clock(), capacity=2, token=counter_tokens())
    first, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    second, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    third, _ = store.create(access_key_id=AKID, principal_arn=ARN)
    assert store.get(first) is None and store.get(second) and store.get(third)
    assert first not in store._items and second not in store._items  # the table holds digests only


def test_the_csrf_token_is_compared_whole() -> None:
    _sid, session = SessionStore(clock=Clock()).create(access_key_id=AKID, principal_arn=ARN)
    assert session.check_csrf(session.csrf_token)
    assert not session.check_csrf(None) and not session.check_csrf("")
    assert not session.check_csrf(session.csrf_token[:-1]) and not session.check_csrf(
        session.csrf_token + "x"
    )


def test_the_signin_token_is_bound_to_its_cookie_and_expires() -> None:
    clock = Clock()
    tokens = SigninTokens(b"k" * 32, clock=clock, lifetime=60)
    nonce, token = tokens.issue()
    assert tokens.check(nonce, token)
    other_nonce, _ = tokens.issue()
    assert not tokens.check(other_nonce, token)  # another browser's cookie
    assert not tokens.check(nonce, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not tokens.check(nonce, None) and not tokens.check(None, token)
    assert not tokens.check(nonce, "x." + token.partition(".")[2])
    assert not SigninTokens(b"j" * 32, clock=clock).check(nonce, token)  # another process's key
    clock.now += 60
    assert not tokens.check(nonce, token)


def test_failed_signins_are_limited_per_address_and_per_key() -> None:
    clock = Clock()
    limiter = SigninLimiter(clock=clock, max_failures=3, window=60, capacity=100)
    for _ in range(3):
        assert limiter.allowed("ip:a", "key:k")
        limiter.failed("ip:a", "key:k")
    assert not limiter.allowed("ip:a", "key:other") and not limiter.allowed("ip:b", "key:k")
    assert limiter.allowed("ip:b", "key:other")
    clock.now += 61
    assert limiter.allowed("ip:a", "key:k")  # the window slid past them
    limiter.failed("key:k")
    limiter.succeeded("key:k")
    assert limiter.allowed("key:k") and len(limiter._failures) == 0
    for n in range(150):
        limiter.failed(f"ip:{n}")
    assert len(limiter._failures) == 100  # bounded


def test_same_origin() -> None:
    assert same_origin(None, "127.0.0.1:7448")
    assert same_origin("https://127.0.0.1:7448", "127.0.0.1:7448")
    assert not same_origin("https://evil.example", "127.0.0.1:7448")
    assert not same_origin("http://127.0.0.1:7448", "127.0.0.1:7448")
    assert not same_origin("null", "127.0.0.1:7448")


# -- the pipeline -----------------------------------------------------------------------------------------


def _operation(seen: Seen, name: str, response: Any) -> Operation:
    method = secrets_pb2.DESCRIPTOR.services_by_name["SecretsManagerService"].methods_by_name[name]
    full = SM + name

    async def invoke(request: Any, remaining: float | None) -> Any:
        seen.calls.append(
            {
                "method": name,
                "principal": ctx.current_principal(),
                "akid": ctx.access_key_id_var.get(),
                "user_agent": ctx.current_user_agent(),
                "request": request,
            }
        )
        if seen.fail is not None:
            raise seen.fail
        return response

    return Operation(
        method=method,
        route=ROUTES[full],
        request_class=type(request_of(name)),
        response_class=type(response),
        invoke=invoke,
    )


def request_of(name: str) -> Any:
    return getattr(secrets_pb2, f"{name}Request")()


@dataclass
class Harness:
    client: TestClient[Any, Any]
    seen: Seen
    directory: FakeDirectory
    console: console_server.ConsoleApp
    trail: FakeTrail

    async def signin(self, secret: str = SECRET, *, old_session: str = "") -> tuple[int, str | None, Any]:
        """Sign in as the browser does: GET the form (its cookie and token), then POST it."""
        form = await self.client.get("/signin")
        nonce = form.cookies[console_server.SIGNIN_COOKIE].value
        token = _field(await form.text(), "csrf_token")
        response = await self.client.post(
            "/signin",
            data={"csrf_token": token, "access_key_id": AKID, "secret_access_key": secret, "next": ""},
            headers={
                "Cookie": f"{console_server.SIGNIN_COOKIE}={nonce}"
                + (f"; {console_server.SESSION_COOKIE}={old_session}" if old_session else "")
            },
            allow_redirects=False,
        )
        cookie = response.cookies.get(console_server.SESSION_COOKIE)
        return response.status, (cookie.value if cookie is not None else None), cookie

    async def get(self, path: str, session_id: str) -> Any:
        return await self.client.get(
            path, headers={"Cookie": f"{console_server.SESSION_COOKIE}={session_id}"}, allow_redirects=False
        )

    async def post(self, path: str, session_id: str, data: dict[str, str]) -> Any:
        return await self.client.post(
            path,
            data=data,
            headers={"Cookie": f"{console_server.SESSION_COOKIE}={session_id}"},
            allow_redirects=False,
        )


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} in the page"
    return match.group(1)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    seen, directory = Seen(), FakeDirectory({AKID: alice_record(AKID, SECRET)}, (admin_policy(),))
    operations = {
        SM + "ListSecrets": _operation(
            seen,
            "ListSecrets",
            secrets_pb2.ListSecretsResponse(
                secret_list=[secrets_pb2.SecretListEntry(arn=SECRET_ARN, name="app/db")], next_token="page/2+"
            ),
        ),
        SM + "RestoreSecret": _operation(seen, "RestoreSecret", secrets_pb2.RestoreSecretResponse()),
    }
    trail = FakeTrail()
    console = console_server.ConsoleApp(
        operations=operations,
        directory=directory,  # type: ignore[arg-type]
        region="local-1",
        trail=trail,
    )
    async with TestClient(TestServer(console_server.build_app(console))) as client:
        yield Harness(client, seen, directory, console, trail)


async def test_signin_checks_the_secret_and_sets_a_strict_cookie(harness: Harness) -> None:
    status, session_id, _ = await harness.signin("wrong" + SECRET)
    assert status == 401 and session_id is None
    status, session_id, cookie = await harness.signin()
    assert status == 303 and session_id
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/" and 0 < int(cookie["max-age"]) <= 8 * 3600
    page = await harness.get("/secrets", session_id)
    assert page.status == 200
    [call] = harness.seen.calls
    assert call["method"] == "ListSecrets" and call["principal"] == ARN and call["akid"] == AKID
    assert ctx.current_principal() is None and ctx.access_key_id_var.get() is None
    refused, signed_in = harness.trail.events
    assert (refused.event_source, refused.event_name) == ("signin.amazonaws.com", "ConsoleLogin")
    assert refused.error_code == "UnrecognizedClientException"
    assert signed_in.error_code is None and signed_in.user_identity.arn == ARN
    assert SECRET not in repr(refused) and SECRET not in repr(signed_in)


async def test_signing_in_again_gives_a_new_session_and_ends_the_old_one(harness: Harness) -> None:
    _, first, _ = await harness.signin()
    assert first
    _, second, _ = await harness.signin(old_session=first)
    assert second and second != first
    assert (await harness.get("/secrets", first)).status == 303
    assert (await harness.get("/secrets", second)).status == 200
    assert len(harness.console.sessions) == 1


async def test_repeated_failed_signins_are_refused_for_a_while(harness: Harness) -> None:
    for _ in range(10):
        assert (await harness.signin("wrong"))[0] == 401
    status, session_id, _ = await harness.signin()
    assert status == 429 and session_id is None  # even the right secret, for now


async def test_signin_without_its_token_is_refused(harness: Harness) -> None:
    response = await harness.client.post(
        "/signin", data={"access_key_id": AKID, "secret_access_key": SECRET}, allow_redirects=False
    )
    assert response.status == 403 and console_server.SESSION_COOKIE not in response.cookies


async def test_every_answer_has_the_strict_headers(harness: Harness) -> None:
    for path in ("/signin", "/secrets", "/static/console.css", "/nowhere"):
        response = await harness.client.get(path, allow_redirects=False)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        expected = "no-cache" if path.startswith("/static/") else "no-store"
        assert response.headers["Cache-Control"] == expected
    page = await harness.client.get("/signin")
    assert "<script>" not in await page.text() and " style=" not in await page.text()


async def test_a_post_without_the_csrf_token_never_runs(harness: Harness) -> None:
    _, session_id, _ = await harness.signin()
    assert session_id
    page = await harness.get("/secrets", session_id)
    token = _field(await page.text(), "csrf_token")
    harness.seen.calls.clear()
    for data in ({"secret_id": "s"}, {"secret_id": "s", "csrf_token": token + "x"}):
        response = await harness.post("/secret/restore", session_id, data)
        assert response.status == 403 and "CSRF" in await response.text()
    assert harness.seen.calls == []
    response = await harness.post("/secret/restore", session_id, {"secret_id": "s", "csrf_token": token})
    assert response.status == 303 and response.headers["Location"] == "/secret?id=s"
    [call] = harness.seen.calls
    assert call["method"] == "RestoreSecret" and call["request"].secret_id == "s"


async def test_an_access_denied_is_shown_with_aws_words(harness: Harness) -> None:
    _, session_id, _ = await harness.signin()
    assert session_id
    token = _field(await (await harness.get("/secrets", session_id)).text(), "csrf_token")
    message = f"User: {ARN} is not authorized to perform: secretsmanager:RestoreSecret on resource: s"
    harness.seen.fail = errors.AccessDenied(message)
    response = await harness.post("/secret/restore", session_id, {"secret_id": "s", "csrf_token": token})
    text = await response.text()
    assert response.status == 403 and "AccessDeniedException" in text and message in text


async def test_a_deactivated_key_or_a_signed_out_session_is_refused(harness: Harness) -> None:
    _, session_id, _ = await harness.signin()
    assert session_id
    token = _field(await (await harness.get("/secrets", session_id)).text(), "csrf_token")
    response = await harness.post("/signout", session_id, {"csrf_token": token})
    assert response.status == 303 and response.headers["Location"] == "/signin"
    page = await harness.get("/secrets", session_id)
    assert page.status == 303 and page.headers["Location"].startswith("/signin?next=")
    response = await harness.post("/secret/restore", session_id, {"secret_id": "s", "csrf_token": token})
    assert response.status == 401

    _, session_id, _ = await harness.signin()
    assert session_id
    harness.seen.calls.clear()
    harness.directory.deactivate(AKID)
    page = await harness.get("/secrets", session_id)
    assert page.status == 303 and harness.seen.calls == []
    assert len(harness.console.sessions) == 0  # the session is gone for good
    status, new_session, _ = await harness.signin()
    assert status == 401 and new_session is None


async def test_the_list_searches_with_listsecrets_filters_and_pages_with_its_token(harness: Harness) -> None:
    _, session_id, _ = await harness.signin()
    assert session_id
    query = "/secrets?" + urlencode(
        {"q": "team prod", "key": "tag-value", "sort_by": "name", "sort_order": "asc"}
    )
    page = await harness.get(query, session_id)
    html = await page.text()
    assert page.status == 200 and "app/db" in html
    match = re.search(r'id="next-page" href="([^"]+)"|href="([^"]+)" id="next-page"', html)
    assert match, "a next-page link"
    next_url = (match.group(1) or match.group(2)).replace("&amp;", "&")
    await harness.get(next_url, session_id)
    first, second = (call["request"] for call in harness.seen.calls)
    assert [(f.key, list(f.values)) for f in first.filters] == [("tag-value", ["team", "prod"])]
    assert (first.sort_by, first.sort_order, first.max_results) == ("name", "asc", 25)
    assert not first.HasField("next_token") and second.next_token == "page/2+"
    assert [(f.key, list(f.values)) for f in second.filters] == [("tag-value", ["team", "prod"])]


def test_next_stays_on_this_site() -> None:
    assert console_server._local_path("/secret?id=a") == "/secret?id=a"
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil", "javascript:alert(1)", ""):
        assert console_server._local_path(bad) == ""
