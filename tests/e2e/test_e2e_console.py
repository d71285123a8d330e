"""The web console (issue 15) in a real browser: Debian's chromium, headless, driven by Selenium through
chromedriver, against a whole deployment built as ``make run`` builds it (the shared ``e2e`` one).

One browser for the module; the tests run in order over one secret: sign in, create it, find it by tag,
reveal its value (and find that read in the audit trail), rotate it with ``random-value`` and watch the
attempt finish, delete and restore it; then a read-only user sees no change buttons and is refused in AWS's
words when it posts anyway; a POST without the CSRF token is refused; a signed-out session and a
deactivated key are refused. Raw requests (to see the status and headers, and to post what the page does
not offer) go over ``http.client`` with the browser's own session cookie, trusting the deployment's CA.

``COFFER_CONSOLE_SCREENSHOTS=<dir>`` saves screenshots of the main pages there (``docs/console`` holds the
README's). Without chromium and chromedriver (``scripts/ensure_chromium.sh`` installs them as root with
apt-get) the module skips, saying why."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .conftest import cli_env, coffer_command

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SESSION_COOKIE = "__Host-coffer-console"
#: Every change button of a secret's page (none of them may show for a read-only user).
CHANGE_BUTTONS = (
    "reveal",
    "put-value",
    "add-tag",
    "rotate-now",
    "rotate",
    "cancel-rotation",
    "delete",
    "restore",
    "update",
    "put-policy",
    "delete-policy",
)
READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "secretsmanager:ListSecrets",
                "secretsmanager:DescribeSecret",
                "secretsmanager:ListSecretVersionIds",
                "secretsmanager:GetResourcePolicy",
                "secretsmanager:ListRotationAttempts",
            ],
            "Resource": "*",
        }
    ],
}


def _missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) and os.access(path, os.X_OK)):
            return (
                f"{path} is not installed (Debian's chromium and chromium-driver; scripts/ensure_chromium.sh "
                "installs them as root with apt-get, which failed or was not allowed here)"
            )
    return None


@dataclass
class Keys:
    access_key_id: str
    secret_access_key: str


@dataclass
class Console:
    """The browser, the deployment, and what the tests pass on to each other."""

    driver: Any
    e2e: Any
    url: str
    ca_file: Path
    shots: Path | None
    state: dict[str, Any] = field(default_factory=dict)

    # -- the browser ---------------------------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(self.url.rstrip("/") + path)

    def find(self, css: str) -> Any:
        from selenium.common.exceptions import NoSuchElementException
        from selenium.webdriver.common.by import By

        try:
            return self.driver.find_element(By.CSS_SELECTOR, css)
        except NoSuchElementException:
            page = self.driver.find_elements(By.CSS_SELECTOR, "main")
            shown = page[0].text if page else self.driver.page_source[:2000]
            raise AssertionError(f"no {css} on {self.path()}; the page says:\n{shown}") from None

    def has(self, css: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def fill(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        element.send_keys(text)

    def click(self, css: str) -> None:
        """Click a link or a submit button and wait for the next page (every click here navigates): the old
        document is marked (through WebDriver, which the page's CSP does not govern) and the wait ends when
        a complete document without the mark is there."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.execute_script("window.cofferOldPage = true;")
        self.find(css).click()

        def next_page(driver: Any) -> bool:
            try:
                return bool(
                    driver.execute_script(
                        "return window.cofferOldPage === undefined && document.readyState === 'complete';"
                    )
                )
            except WebDriverException:  # between two documents
                return False

        WebDriverWait(self.driver, 30, poll_frequency=0.05).until(next_page)

    def text(self) -> str:
        return str(self.find("main").text)

    def path(self) -> str:
        parts = urlsplit(str(self.driver.current_url))
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def shot(self, name: str) -> None:
        if self.shots is not None:
            self.shots.mkdir(parents=True, exist_ok=True)
            self.driver.set_window_size(1280, 1000)
            height = self.driver.execute_script("return document.body.scrollHeight")
            self.driver.set_window_size(1280, min(max(int(height) + 40, 700), 2400))
            self.driver.save_screenshot(str(self.shots / f"{name}.png"))
            self.driver.set_window_size(1280, 1000)

    def sign_in(self, keys: Keys) -> None:
        self.open("/signin")
        self.fill("#access_key_id", keys.access_key_id)
        self.fill("#secret_access_key", keys.secret_access_key)
        self.click("#signin")
        assert self.path().startswith("/secrets"), self.text()

    def sign_out(self) -> None:
        self.click("#signout")
        assert self.path() == "/signin"

    def session_cookie(self) -> str:
        cookie = self.driver.get_cookie(SESSION_COOKIE)
        assert cookie is not None, "no session cookie"
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        return str(cookie["value"])

    def csrf_token(self) -> str:
        return str(self.find("input[name=csrf_token]").get_attribute("value"))

    # -- raw requests (status and headers) -----------------------------------------------------------------

    def request(
        self, method: str, path: str, *, cookie: str | None, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(self.url)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context, timeout=30)
        headers = {"Origin": f"https://{parts.netloc}"}
        if cookie is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        finally:
            conn.close()

    def cli(self, *args: str, keys: Keys | None = None) -> Any:
        env = cli_env(self.e2e.profile_path)
        if keys is not None:
            env["COFFER_ACCESS_KEY_ID"] = keys.access_key_id
            env["COFFER_SECRET_ACCESS_KEY"] = keys.secret_access_key
        result = subprocess.run(
            [*coffer_command(), *args],
            env=env,
            cwd=self.e2e.profile_path.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (args, result.stderr)
        return json.loads(result.stdout) if result.stdout.strip() else {}


def _spki_pin(cert_file: Path) -> str:
    """Chromium's ``--ignore-certificate-errors-spki-list`` entry for this certificate: base64 SHA-256 of its
    public key. Only the gateway's own certificate is accepted without the CA in the browser's store."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def console(e2e: Any) -> Iterator[Console]:
    missing = _missing_browser()
    if missing is not None:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir = tempfile.mkdtemp(prefix="coffer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile_dir}",
        "--window-size=1280,1000",
        f"--ignore-certificate-errors-spki-list={_spki_pin(e2e.settings.pki_dir / 'gateway.crt')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    shots = os.environ.get("COFFER_CONSOLE_SCREENSHOTS")
    try:
        yield Console(
            driver=driver,
            e2e=e2e,
            url=e2e.console_url,
            ca_file=e2e.ca_file,
            shots=Path(shots) if shots else None,
        )
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def _admin(console: Console) -> Keys:
    creds = console.e2e.admin_credentials
    return Keys(creds.access_key_id, creds.secret_access_key)


def _eventually(check: Any, *, timeout: float, message: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(every)


def test_sign_in_create_a_secret_find_it_by_tag_and_reveal_it(console: Console) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"console/{tag}/db-password"
    value = f"s3cret-{uuid.uuid4().hex}"
    console.state.update(tag=tag, name=name, value=value)

    console.open("/secrets")
    assert console.path().startswith("/signin?next="), "a page without a session sends the browser to sign in"
    # The keyboard reaches the skip link first, then the fields in reading order.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys as Key

    order = []
    for _ in range(6):
        ActionChains(console.driver).send_keys(Key.TAB).perform()
        active = console.driver.switch_to.active_element
        order.append(active.get_attribute("id") or active.text)
    assert order == [
        "Skip to content",
        "Coffer",
        "access_key_id",
        "secret_access_key",
        "role_arn",
        "signin",
    ], order
    console.fill("#access_key_id", console.e2e.admin_credentials.access_key_id)
    console.fill("#secret_access_key", "not-" + console.e2e.admin_credentials.secret_access_key)
    console.click("#signin")
    assert "not valid" in console.find("#error").text and console.driver.get_cookie(SESSION_COOKIE) is None
    console.sign_in(_admin(console))
    assert "user/admin" in console.find("#signed-in-as").text
    console.session_cookie()  # Secure, HttpOnly, SameSite=Strict

    console.click("#create-secret")
    console.fill("#name", name)
    console.fill("#description", "The console test's database password")
    console.fill("#secret_string", value)
    console.fill("#tags", f"team={tag}\nenv=test")
    console.click("#create")
    assert console.find("#flash").text == f"Secret {name} created."
    assert console.find("#secret-name").text == name
    assert value not in console.driver.page_source, "the value is never in the page before the click"
    console.state["arn"] = console.find("#secret-arn").text

    # The same name again: the form comes back as filled (but the value), with AWS's reason.
    console.open("/secrets/new")
    console.fill("#name", name)
    console.fill("#secret_string", "another")
    console.fill("#tags", f"team={tag}")
    console.click("#create")
    assert "ResourceExistsException" in console.find("#error").text
    assert console.find("#name").get_attribute("value") == name
    assert console.find("#secret_string").get_attribute("value") == ""

    console.open("/secrets")
    console.fill("#q", tag)
    console.find("#key").send_keys("tag-value")
    console.click("#search")
    rows = console.find("#secret-list").text
    assert name in rows and f"team={tag}" in rows
    # two filters at once (tag key and name words in the search box), both must match
    console.open("/secrets?" + urlencode({"q": f"tag-key:team name:console/{tag}/", "key": "all"}))
    assert name in console.find("#secret-list").text
    console.open("/secrets?" + urlencode({"q": f"tag-key:nosuchkey name:console/{tag}/", "key": "all"}))
    assert name not in console.driver.page_source
    console.open("/secrets?" + urlencode({"q": tag, "key": "tag-value"}))
    console.shot("secret-list")
    console.click(f"#secret-list a[href*='{tag}']")
    assert console.find("#secret-name").text == name and value not in console.driver.page_source

    console.click("#reveal")
    assert console.find("#secret-value").text == value
    # The reveal's answer is never kept by the browser.
    status, headers, body = console.request(
        "POST",
        "/secret/value",
        cookie=console.session_cookie(),
        form={"csrf_token": console.csrf_token(), "secret_id": console.state["arn"]},
    )
    assert status == 200 and value in body
    assert headers["cache-control"] == "no-store"
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp

    # Both reads are GetSecretValue calls by the admin in the audit trail.
    def reads() -> list[str]:
        console.open("/audit?" + urlencode({"attribute": "ResourceName", "value": console.state["arn"]}))
        rows = console.driver.find_elements("css selector", "#events tbody tr")
        return [r.text for r in rows if "GetSecretValue" in r.text and "admin" in r.text]

    assert len(_eventually(reads, timeout=10, message="the reveal in the audit trail")) >= 2
    # So are the sign-ins, the refused one included (nothing of the form is kept).
    console.open("/audit?" + urlencode({"attribute": "EventName", "value": "ConsoleLogin"}))
    logins = console.find("#events").text
    assert "admin" in logins and logins.count("ConsoleLogin") >= 2
    assert console.e2e.admin_credentials.secret_access_key not in console.driver.page_source
    console.open("/audit?" + urlencode({"attribute": "EventName", "value": "GetSecretValue"}))
    console.shot("audit")


def test_rotate_with_random_value_and_watch_the_attempt_finish(console: Console) -> None:
    arn, value = console.state["arn"], console.state["value"]
    console.open("/secret?" + urlencode({"id": arn}))
    assert console.has("#no-attempts")
    assert console.find("#rotation_lambda_arn").get_attribute("value") == "random-value"
    console.fill("#days", "30")
    console.click("#rotate")
    assert "Rotation started" in console.find("#flash").text

    def finished() -> str:
        console.click("#refresh")
        if not console.has("#attempts"):
            return ""
        status = str(console.find("#attempts tbody tr .attempt-status").text)
        return status if status.startswith(("Succeeded", "Failed")) else ""

    status = _eventually(finished, timeout=45, message="the rotation attempt finishing", every=1.0)
    assert status.startswith("Succeeded"), console.find("#attempts").text
    steps = console.find("#attempts tbody tr .steps").text
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        assert f"{step}: succeeded" in steps, steps
    assert console.find("#rotation-enabled").text == "on" and console.has("#rotate-now")
    # "Rotate now" with the saved configuration: a second attempt, finished too.
    console.click("#rotate-now")
    assert "Rotation started" in console.find("#flash").text

    def both_finished() -> bool:
        console.click("#refresh")
        rows = console.driver.find_elements("css selector", "#attempts tbody tr .attempt-status")
        return len(rows) == 2 and all(r.text.startswith("Succeeded") for r in rows)

    _eventually(both_finished, timeout=45, message="the second rotation finishing", every=1.0)
    labels = console.find("#versions").text
    assert "AWSCURRENT" in labels and "AWSPREVIOUS" in labels
    console.click("#reveal")
    assert console.find("#secret-value").text not in ("", value), "AWSCURRENT moved to a new random value"
    console.click("#hide-value")
    console.shot("secret")


def test_delete_with_a_recovery_window_and_restore(console: Console) -> None:
    arn = console.state["arn"]
    console.open("/secret?" + urlencode({"id": arn}))
    console.fill("#recovery_window_in_days", "7")
    console.click("#delete")
    assert "scheduled for deletion" in console.find("#flash").text
    assert console.has("#deleted-note") and not console.has("#reveal")
    console.open("/secrets?" + urlencode({"q": console.state["tag"], "key": "tag-value"}))
    assert console.has("#no-secrets"), "a deleted secret is listed only when asked for"
    console.open(
        "/secrets?" + urlencode({"q": console.state["tag"], "key": "tag-value", "include_deleted": "on"})
    )
    assert "scheduled for deletion" in console.find("#secret-list").text
    console.open("/secret?" + urlencode({"id": arn}))
    console.click("#restore")
    assert console.find("#flash").text == "Secret restored."
    assert not console.has("#deleted-note") and console.has("#reveal")


def test_kms_keys_page(console: Console) -> None:
    console.open("/kms")
    assert console.has("#keys") and "aws/secretsmanager" in console.find("#aliases").text


def test_sign_in_with_a_role_acts_as_the_role(console: Console) -> None:
    tag, arn = console.state["tag"], console.state["arn"]
    account = console.e2e.settings.account_id
    role = f"console-role-{tag}"
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": account}, "Action": "sts:AssumeRole"}],
    }
    console.cli("iam", "create-role", "--role-name", role, "--assume-role-policy-document", json.dumps(trust))
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            *READ_ONLY["Statement"],
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn},
        ],
    }
    console.cli(
        "iam", "put-role-policy", "--role-name", role, "--policy-name", "read",
        "--policy-document", json.dumps(policy),
    )  # fmt: skip
    console.sign_out()
    console.open("/signin")
    console.fill("#access_key_id", console.e2e.admin_credentials.access_key_id)
    console.fill("#secret_access_key", console.e2e.admin_credentials.secret_access_key)
    console.fill("#role_arn", f"arn:aws:iam::{account}:role/{role}")
    console.click("#signin")
    assert f"assumed-role/{role}/console-admin" in console.find("#signed-in-as").text
    console.open("/secret?" + urlencode({"id": arn}))
    assert console.has("#reveal") and not console.has("#rotate-now") and not console.has("#delete")
    console.click("#reveal")
    assert console.find("#secret-value").text, "the role may read this secret"
    console.sign_out()
    console.sign_in(_admin(console))


def test_a_read_only_user_sees_no_change_buttons_and_is_refused_when_it_posts(console: Console) -> None:
    tag, arn = console.state["tag"], console.state["arn"]
    user = f"console-reader-{tag}"
    console.cli("iam", "create-user", "--user-name", user)
    console.cli(
        "iam", "put-user-policy", "--user-name", user, "--policy-name", "read-only",
        "--policy-document", json.dumps(READ_ONLY),
    )  # fmt: skip
    created = console.cli("iam", "create-access-key", "--user-name", user)["AccessKey"]
    reader = Keys(created["AccessKeyId"], created["SecretAccessKey"])
    console.state.update(reader=reader, reader_name=user)

    console.sign_out()
    console.sign_in(reader)
    assert f"user/{user}" in console.find("#signed-in-as").text
    assert not console.has("#create-secret")
    assert console.has("#nav-secrets") and not console.has("#nav-kms") and not console.has("#nav-audit")
    console.open("/secret?" + urlencode({"id": arn}))
    assert console.find("#secret-name").text == console.state["name"]
    shown = [button for button in CHANGE_BUTTONS if console.has(f"#{button}")]
    assert shown == [], f"a read-only user sees {shown}"
    assert console.has("#attempts"), "it still reads the rotation history"

    cookie, token = console.session_cookie(), console.csrf_token()
    for path, form in (
        ("/secret/rotate", {"secret_id": arn}),
        ("/secret/value", {"secret_id": arn}),
        ("/secret/delete", {"secret_id": arn, "recovery_window_in_days": "7"}),
    ):
        status, _headers, body = console.request(
            "POST", path, cookie=cookie, form={"csrf_token": token, **form}
        )
        action = {"/secret/rotate": "RotateSecret", "/secret/value": "GetSecretValue"}.get(
            path, "DeleteSecret"
        )
        assert status == 403, (path, status, body)
        assert "AccessDeniedException" in body
        assert (
            f"User: arn:aws:iam::000000000000:user/{user} is not authorized to perform: "
            f"secretsmanager:{action} on resource: {arn}"
        ) in body.replace("&#34;", '"'), body
    assert console.state["value"] not in body
    console.open("/secret?" + urlencode({"id": arn}))
    assert not console.has("#deleted-note"), "the refused delete changed nothing"


def test_the_buttons_follow_the_secrets_resource_policy_too(console: Console) -> None:
    """A resource policy that grants the read-only user GetSecretValue shows it the reveal button (and the
    reveal works); one that denies the admin RotateSecret hides the admin's rotate-now button."""
    arn, user, reader = console.state["arn"], console.state["reader_name"], console.state["reader"]
    admin_arn = "arn:aws:iam::000000000000:user/admin"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::000000000000:user/{user}"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            },
            {
                "Effect": "Deny",
                "Principal": {"AWS": admin_arn},
                "Action": "secretsmanager:RotateSecret",
                "Resource": "*",
            },
        ],
    }
    console.cli(
        "secretsmanager", "put-resource-policy", "--secret-id", arn, "--resource-policy", json.dumps(policy)
    )
    try:
        console.open("/secret?" + urlencode({"id": arn}))  # still signed in as the reader
        assert f"user/{user}" in console.find("#signed-in-as").text
        assert console.has("#reveal") and not console.has("#put-value")
        console.click("#reveal")
        current = console.cli("secretsmanager", "get-secret-value", "--secret-id", arn)["SecretString"]
        assert console.find("#secret-value").text == current  # rotated earlier: the value now current
        console.sign_out()
        console.sign_in(_admin(console))
        console.open("/secret?" + urlencode({"id": arn}))
        assert not console.has("#rotate-now") and console.has("#put-value")
    finally:
        console.cli("secretsmanager", "delete-resource-policy", "--secret-id", arn)
    console.open("/secret?" + urlencode({"id": arn}))
    assert console.has("#rotate-now")
    console.sign_out()
    console.sign_in(reader)


def test_a_post_without_the_csrf_token_is_refused(console: Console) -> None:
    arn, cookie = console.state["arn"], console.session_cookie()
    for form in ({"secret_id": arn}, {"secret_id": arn, "csrf_token": "forged"}):
        status, _headers, body = console.request("POST", "/secret/rotate", cookie=cookie, form=form)
        assert status == 403 and "CSRF" in body and "AccessDenied" not in body
    # the refused changes are in the audit trail, with the caller's address and the reason
    refused = console.cli(
        "audit", "lookup-events", "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=ConsoleRequestRefused",
    )["Events"]  # fmt: skip
    records = [json.loads(e["CloudTrailEvent"]) for e in refused]
    assert len(records) >= 2 and {r["errorCode"] for r in records} == {"InvalidCsrfToken"}, records
    assert all("/secret/rotate" in r["errorMessage"] and r["sourceIPAddress"] for r in records), records
    # Signing in needs the sign-in form's own token too.
    status, _headers, body = console.request(
        "POST", "/signin", cookie=None, form={"access_key_id": "AKIA", "secret_access_key": "x"}
    )
    assert status == 403 and "CSRF" in body


def test_a_signed_out_session_and_a_deactivated_key_are_refused(console: Console) -> None:
    arn = console.state["arn"]
    old_cookie, old_token = console.session_cookie(), console.csrf_token()
    console.sign_out()
    assert console.driver.get_cookie(SESSION_COOKIE) is None
    status, headers, _ = console.request("GET", "/secrets", cookie=old_cookie)
    assert status == 303 and headers["location"].startswith("/signin")
    status, _headers, body = console.request(
        "POST", "/secret/rotate", cookie=old_cookie, form={"csrf_token": old_token, "secret_id": arn}
    )
    assert status == 401 and "session has ended" in body

    reader: Keys = console.state["reader"]
    console.sign_in(reader)
    cookie = console.session_cookie()
    assert console.request("GET", "/secrets", cookie=cookie)[0] == 200
    console.cli(
        "iam", "update-access-key", "--user-name", console.state["reader_name"],
        "--access-key-id", reader.access_key_id, "--status", "Inactive",
    )  # fmt: skip
    _eventually(
        lambda: console.request("GET", "/secrets", cookie=cookie)[0] == 303,
        timeout=10,
        message="the deactivated key's session refused",
    )
    console.open("/secrets")
    assert console.path().startswith("/signin")
    console.fill("#access_key_id", reader.access_key_id)
    console.fill("#secret_access_key", reader.secret_access_key)
    console.click("#signin")
    assert "not valid" in console.find("#error").text
    console.shot("signin")
    assert re.match(r"/signin", console.path())
