"""The web console's templates: each renders with the sparsest answer the API gives (AWS JSON omits absent
members) and with a full one; values are escaped; no template has inline script, inline style or an event
handler attribute (the Content-Security-Policy would block them); every form field has a label."""

from __future__ import annotations

import re
from typing import Any

import pytest

from coffer.gateway.console import server as console_server
from coffer.gateway.console.server import SECRET_ACTIONS, TEMPLATES, secret_url

ARN = "arn:aws:secretsmanager:local-1:000000000000:secret:app/db-AbCdEf"
COMMON: dict[str, Any] = {
    "region": "local-1",
    "session": {"principal_arn": "arn:aws:iam::000000000000:user/alice"},
    "csrf_token": "tok",
    "flash": None,
}


def render(template: str, **values: Any) -> str:
    return console_server.templates().get_template(template).render(**{**COMMON, **values})


def secret_values(secret: dict[str, Any], *, can: bool, **more: Any) -> dict[str, Any]:
    return {
        "secret": secret,
        "arn": ARN,
        "deleted": bool(secret.get("DeletedDate")),
        "versions": [],
        "versions_error": "",
        "policy": "",
        "policy_error": "",
        "attempts": [],
        "attempts_error": "",
        "can": dict.fromkeys(SECRET_ACTIONS, can),
        "token": "t",
        "secret_url": secret_url,
        "revealed": None,
        **more,
    }


@pytest.mark.parametrize("can", [True, False])
def test_a_secret_page_renders_from_the_sparsest_answer(can: bool) -> None:
    html = render("secret.html", **secret_values({"ARN": ARN, "Name": "app/db"}, can=can))
    assert "app/db" in html and ('id="reveal"' in html) is can and ('id="delete"' in html) is can


def test_a_full_secret_page_escapes_what_it_shows() -> None:
    secret = {
        "ARN": ARN,
        "Name": "app/<b>db</b>",
        "Description": '"><script>alert(1)</script>',
        "RotationEnabled": True,
        "RotationLambdaARN": "random-value",
        "RotationRules": {"AutomaticallyAfterDays": 30},
        "LastRotatedDate": 1_700_000_000.5,
        "Tags": [{"Key": "team", "Value": "<i>x</i>"}],
        "ReplicationStatus": [{"Region": "local-2", "Status": "InSync"}],
        "DeletedDate": 1_700_000_100,
    }
    html = render(
        "secret.html",
        **secret_values(
            secret,
            can=True,
            versions=[{"VersionId": "v1", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1_700_000_000}],
            attempts=[
                {
                    "VersionId": "v2",
                    "Status": "Failed",
                    "Rotator": "random-value",
                    "Tries": 2,
                    "Error": "<oops>",
                    "Steps": [{"Step": "createSecret", "Status": "failed", "TryNumber": 2, "Error": "e"}],
                }
            ],
            policy='{"Version":"2012-10-17","Statement":[]}',
            revealed={"VersionId": "v1", "VersionStages": ["AWSCURRENT"], "SecretString": "<s3cret>"},
        ),
    )
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<b>db</b>" not in html and "<i>x</i>" not in html and "&lt;oops&gt;" in html
    assert "&lt;s3cret&gt;" in html and "2023-11-14 22:13:20" in html
    assert 'id="restore"' in html and 'id="deleted-note"' in html and 'id="delete"' not in html
    assert (
        "createSecret: failed (try 2)" in html
        and "local-2" in html
        and "&#34;Version&#34;: &#34;2012-10-17&#34;" in html
    )


def test_the_other_pages_render() -> None:
    assert "No secrets" in render(
        "secrets.html",
        secrets=[],
        search="",
        key="all",
        keys=console_server.LIST_FILTER_KEYS,
        sort_by="name",
        sorts=console_server.SORT_BY,
        sort_order="asc",
        include_deleted=False,
        next_url="",
        first_page=True,
        secret_url=secret_url,
        can_create=False,
    )
    listing = render(
        "secrets.html",
        secrets=[
            {"ARN": ARN, "Name": "app/db", "Tags": [{"Key": "k", "Value": "v"}], "RotationEnabled": True}
        ],
        search="k",
        key="tag-key",
        keys=console_server.LIST_FILTER_KEYS,
        sort_by="name",
        sorts=console_server.SORT_BY,
        sort_order="asc",
        include_deleted=True,
        next_url="/secrets?next=abc",
        first_page=False,
        secret_url=secret_url,
        can_create=True,
    )
    assert secret_url(ARN).replace("&", "&amp;") in listing or secret_url(ARN) in listing
    assert 'id="next-page"' in listing and 'id="create-secret"' in listing
    assert "No keys" in render("kms.html", keys=[], aliases=[], aliases_error="", next_url="")
    kms = render(
        "kms.html",
        keys=[{"entry": {"KeyId": "k1"}, "meta": {"KeyState": "Enabled"}, "error": ""}],
        aliases=[{"AliasName": "alias/aws/secretsmanager", "TargetKeyId": "k1"}],
        aliases_error="",
        next_url="",
    )
    assert "k1" in kms and "Enabled" in kms
    audit = render(
        "audit.html",
        events=[{"EventName": "GetSecretValue", "ReadOnly": "true", "CloudTrailEvent": '{"a": 1}'}],
        attribute="EventName",
        attributes=console_server.AUDIT_ATTRIBUTES,
        value="GetSecretValue",
        start="",
        end="",
        next_url="",
    )
    assert "GetSecretValue" in audit and "&#34;a&#34;: 1" in audit
    assert "AccessDeniedException" in render(
        "error.html", code="AccessDeniedException", message="m", http_status=403
    )
    assert "csrf_token" in render("new_secret.html", values={}, token="t", can_create=True)
    assert "Sign in" in render(
        "signin.html", session=None, signin_token="t", next_path="", message="", access_key_id=""
    )


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.html")), ids=lambda p: p.name)
def test_no_inline_script_or_style_and_every_field_is_labelled(path: Any) -> None:
    text = path.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline <script>"
    assert "<style" not in text and not re.search(r"\sstyle=", text), "inline style"
    assert not re.search(r"\son[a-z]+=", text), "event handler attribute"
    ids = set(re.findall(r'<(?:input|textarea|select)\b(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', text))
    labelled = set(re.findall(r'<label for="([^"]+)"', text))
    assert ids <= labelled, f"fields without a label: {ids - labelled}"
    fields = re.findall(r"<(?:input|textarea|select)\b(?![^>]*type=\"hidden\")[^>]*>", text)
    assert all(' id="' in field for field in fields), "a visible field without an id (so without a label)"


def test_the_search_box_makes_one_listsecrets_filter_per_key() -> None:
    from coffer.gateway.console.pages import list_filters

    assert list_filters("db prod", "name") == [{"Key": "name", "Values": ["db", "prod"]}]
    assert list_filters("tag-key:team name:app/ db tag-key:env", "all") == [
        {"Key": "tag-key", "Values": ["team", "env"]},
        {"Key": "name", "Values": ["app/"]},
        {"Key": "all", "Values": ["db"]},
    ]
    # not a key, or nothing after the colon: an ordinary word
    assert list_filters("owner:x name:", "description") == [
        {"Key": "description", "Values": ["owner:x", "name:"]}
    ]
