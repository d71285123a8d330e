"""The console's pages: each reads the request, calls the public operations as the signed-in caller
(``View.call``: the same ``Operation`` as the gRPC port and the AWS endpoint) and renders a template.
No rule of the API is repeated here: what the store refuses is shown as the store said it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from coffer.core import errors
from coffer.core.model import Tag
from coffer.core.secret_keys import SecretFacts
from coffer.gateway.console.server import (
    _AUDIT,
    _KMS,
    _SM,
    AUDIT_ATTRIBUTES,
    AUDIT_PAGE_SIZE,
    LIST_FILTER_KEYS,
    PAGE_SIZE,
    SECRET_ACTIONS,
    SORT_BY,
    ConsoleApp,
    View,
    secret_url,
    status_of,
)
from coffer.rpc.status import bounded_message, classify


def add_routes(app: web.Application, console: ConsoleApp) -> None:
    page = console.page
    app.router.add_get("/", page(home))
    app.router.add_get("/secrets", page(secret_list))
    app.router.add_get("/secrets/new", page(new_secret_form))
    app.router.add_post("/secrets/new", page(create_secret))
    app.router.add_get("/secret", page(secret_page))
    app.router.add_post("/secret/value", page(reveal_value))
    app.router.add_post("/secret/update", page(update_secret))
    app.router.add_post("/secret/put-value", page(put_value))
    app.router.add_post("/secret/tag", page(tag_secret))
    app.router.add_post("/secret/untag", page(untag_secret))
    app.router.add_post("/secret/rotate", page(rotate_secret))
    app.router.add_post("/secret/cancel-rotation", page(cancel_rotation))
    app.router.add_post("/secret/delete", page(delete_secret))
    app.router.add_post("/secret/restore", page(restore_secret))
    app.router.add_post("/secret/policy", page(put_policy))
    app.router.add_post("/secret/policy/delete", page(delete_policy))
    app.router.add_get("/kms", page(kms_page))
    app.router.add_get("/audit", page(audit_page))


async def home(_view: View) -> web.StreamResponse:
    raise web.HTTPSeeOther("/secrets")


# -- the secret list -------------------------------------------------------------------------------------


def list_filters(search: str, key: str) -> list[dict[str, Any]]:
    """ListSecrets ``Filters`` from the search box: a word ``<key>:<value>`` (``tag-key:team``,
    ``name:app/``...) filters on that key, every other word on ``key`` (the "In" choice); the words of one
    key are that filter's values, and every filter has to match (ListSecrets' rule)."""
    values: dict[str, list[str]] = {}
    for word in search.split():
        prefix, colon, rest = word.partition(":")
        if colon and rest and prefix in LIST_FILTER_KEYS:
            values.setdefault(prefix, []).append(rest)
        else:
            values.setdefault(key, []).append(word)
    return [{"Key": name, "Values": words} for name, words in values.items()]


async def secret_list(view: View) -> web.StreamResponse:
    search = view.query("q").strip()
    key = view.query("key", "all")
    if key not in LIST_FILTER_KEYS:
        key = "all"
    sort_by = view.query("sort_by", "created-date")
    if sort_by not in SORT_BY:
        sort_by = "created-date"
    sort_order = "asc" if view.query("sort_order") == "asc" else "desc"
    include_deleted = view.query("include_deleted") == "on"
    body: dict[str, Any] = {
        "MaxResults": PAGE_SIZE,
        "SortBy": sort_by,
        "SortOrder": sort_order,
        "IncludePlannedDeletion": include_deleted,
    }
    if search:
        body["Filters"] = list_filters(search, key)
    token = view.query("next")
    if token:
        body["NextToken"] = token
    listing = await view.call(_SM + "ListSecrets", body)
    params = {
        "q": search,
        "key": key,
        "sort_by": sort_by,
        "sort_order": sort_order,
        **({"include_deleted": "on"} if include_deleted else {}),
    }
    next_token = listing.get("NextToken")
    next_url = "/secrets?" + urlencode({**params, "next": next_token}) if next_token else ""
    return view.render(
        "secrets.html",
        secrets=listing.get("SecretList", []),
        search=search,
        key=key,
        keys=LIST_FILTER_KEYS,
        sort_by=sort_by,
        sorts=SORT_BY,
        sort_order=sort_order,
        include_deleted=include_deleted,
        next_url=next_url,
        first_page=not token,
        secret_url=secret_url,
        can_create=view.can("secretsmanager:CreateSecret"),
    )


# -- creating ---------------------------------------------------------------------------------------------


def _tags_from(text: str) -> list[dict[str, str]]:
    """``key=value`` lines (blank lines ignored) → AWS tags; a line without ``=`` is a key with an empty
    value."""
    tags = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, value = line.partition("=")
        tags.append({"Key": name.strip(), "Value": value.strip()})
    return tags


async def new_secret_form(view: View) -> web.StreamResponse:
    return view.render(
        "new_secret.html",
        values={},
        error="",
        token=str(uuid.uuid4()),
        can_create=view.can("secretsmanager:CreateSecret"),
    )


async def create_secret(view: View) -> web.StreamResponse:
    body: dict[str, Any] = {
        "Name": view.field("name").strip(),
        "ClientRequestToken": view.field("client_request_token") or str(uuid.uuid4()),
        "SecretString": view.field("secret_string"),
    }
    if view.field("description"):
        body["Description"] = view.field("description")
    if view.field("kms_key_id").strip():
        body["KmsKeyId"] = view.field("kms_key_id").strip()
    tags = _tags_from(view.field("tags"))
    if tags:
        body["Tags"] = tags
    try:
        created = await view.call(_SM + "CreateSecret", body)
    except Exception as exc:
        err = classify(exc)
        if isinstance(err, errors.Internal):
            raise
        # The form again, as it was filled (but the value: it is not sent back), with what to fix.
        return view.render(
            "new_secret.html",
            status=status_of(err),
            values={k: view.field(k) for k in ("name", "description", "kms_key_id", "tags")},
            error=f"{err.code}: {bounded_message(err.message)}",
            token=body["ClientRequestToken"],
            can_create=view.can("secretsmanager:CreateSecret"),
        )
    view.done(f"Secret {created.get('Name', '')} created.", secret_url(str(created.get("ARN", ""))))


# -- a secret's page ----------------------------------------------------------------------------------------


async def _secret_values(view: View, secret_id: str) -> dict[str, Any]:
    described = await view.call(_SM + "DescribeSecret", {"SecretId": secret_id})
    arn = str(described.get("ARN", secret_id))
    account = arn.split(":")[4] if arn.count(":") >= 6 else None
    deleted = bool(described.get("DeletedDate"))
    versions, versions_error = await view.optional(
        _SM + "ListSecretVersionIds", {"SecretId": arn, "IncludeDeprecated": True, "MaxResults": 100}
    )
    policy, policy_error = await view.optional(_SM + "GetResourcePolicy", {"SecretId": arn})
    attempts, attempts_error = await view.optional(
        _SM + "ListRotationAttempts", {"SecretId": arn, "MaxResults": 10}
    )
    facts = SecretFacts(
        arn=arn,
        name=str(described.get("Name", "")),
        account=account or view.principal.account,
        region=view.console.region,
        tags=tuple(Tag(str(t.get("Key", "")), str(t.get("Value", ""))) for t in described.get("Tags") or ()),
        resource_policy=(policy or {}).get("ResourcePolicy") or None,
        primary_region=described.get("PrimaryRegion"),
        rotation_lambda_arn=described.get("RotationLambdaARN"),
    )
    can = {name: view.can_on_secret(action, facts) for name, action in SECRET_ACTIONS.items()}
    return {
        "secret": described,
        "arn": arn,
        "deleted": deleted,
        "versions": (versions or {}).get("Versions", []),
        "versions_error": versions_error,
        "policy": (policy or {}).get("ResourcePolicy", ""),
        "policy_error": policy_error,
        "attempts": (attempts or {}).get("Attempts", []),
        "attempts_error": attempts_error,
        "can": can,
        "token": str(uuid.uuid4()),
        "secret_url": secret_url,
    }


async def secret_page(view: View) -> web.StreamResponse:
    secret_id = view.query("id")
    if not secret_id:
        raise web.HTTPSeeOther("/secrets")
    return view.render("secret.html", **await _secret_values(view, secret_id), revealed=None)


def _secret_id(view: View) -> str:
    secret_id = view.field("secret_id")
    if not secret_id:
        raise errors.InvalidParameter("The form names no secret (secret_id).")
    return secret_id


async def reveal_value(view: View) -> web.StreamResponse:
    """GetSecretValue on an explicit click (a POST with the CSRF token): audited as the caller's call; the
    answer is ``no-store`` like every page of the console."""
    secret_id = _secret_id(view)
    body: dict[str, Any] = {"SecretId": secret_id}
    version_id = view.field("version_id")
    if version_id:
        body["VersionId"] = version_id
    value = await view.call(_SM + "GetSecretValue", body)
    values = await _secret_values(view, secret_id)
    return view.render("secret.html", **values, revealed=value)


async def update_secret(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    body: dict[str, Any] = {"SecretId": secret_id, "Description": view.field("description")}
    if view.field("kms_key_id").strip():
        body["KmsKeyId"] = view.field("kms_key_id").strip()
    await view.call(_SM + "UpdateSecret", body)
    view.done("Secret updated.", secret_url(secret_id))


async def put_value(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    answer = await view.call(
        _SM + "PutSecretValue",
        {
            "SecretId": secret_id,
            "ClientRequestToken": view.field("client_request_token") or str(uuid.uuid4()),
            "SecretString": view.field("secret_string"),
        },
    )
    view.done(f"New value stored as version {answer.get('VersionId', '')}.", secret_url(secret_id))


async def tag_secret(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    tag = {"Key": view.field("tag_key").strip(), "Value": view.field("tag_value").strip()}
    await view.call(_SM + "TagResource", {"SecretId": secret_id, "Tags": [tag]})
    view.done(f"Tag {tag['Key']} set.", secret_url(secret_id))


async def untag_secret(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    key = view.field("tag_key")
    await view.call(_SM + "UntagResource", {"SecretId": secret_id, "TagKeys": [key]})
    view.done(f"Tag {key} removed.", secret_url(secret_id))


def _int_field(view: View, name: str, label: str) -> int | None:
    text = view.field(name).strip()
    if not text:
        return None
    if not text.isdigit():
        raise errors.InvalidParameter(f"{label} must be a whole number of days.")
    return int(text)


async def rotate_secret(view: View) -> web.StreamResponse:
    """RotateSecret: "rotate now" (nothing but the secret: its configured rotation) or a new configuration
    (rotation function, schedule, whether to rotate at once)."""
    secret_id = _secret_id(view)
    body: dict[str, Any] = {"SecretId": secret_id, "ClientRequestToken": str(uuid.uuid4())}
    lambda_arn = view.field("rotation_lambda_arn").strip()
    if lambda_arn:
        body["RotationLambdaARN"] = lambda_arn
    rules: dict[str, Any] = {}
    days = _int_field(view, "days", "Rotate every")
    if days is not None:
        rules["AutomaticallyAfterDays"] = days
    expression = view.field("schedule_expression").strip()
    if expression:
        rules["ScheduleExpression"] = expression
    if rules:
        body["RotationRules"] = rules
    if view.field("configure") == "1":
        body["RotateImmediately"] = view.field("rotate_immediately") == "on"
    await view.call(_SM + "RotateSecret", body)
    message = (
        "Rotation settings saved."
        if body.get("RotateImmediately") is False
        else "Rotation started: its attempt is listed below."
    )
    view.done(message, secret_url(secret_id))


async def cancel_rotation(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    await view.call(_SM + "CancelRotateSecret", {"SecretId": secret_id})
    view.done("Rotation turned off.", secret_url(secret_id))


async def delete_secret(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    body: dict[str, Any] = {"SecretId": secret_id}
    days = _int_field(view, "recovery_window_in_days", "The recovery window")
    if days is not None:
        body["RecoveryWindowInDays"] = days
    answer = await view.call(_SM + "DeleteSecret", body)
    when = answer.get("DeletionDate")
    note = ""
    if isinstance(when, int | float):
        note = (
            f" It will be deleted for good on {dt.datetime.fromtimestamp(when, tz=dt.UTC):%Y-%m-%d %H:%M UTC}"
        )
    view.done(
        f"Secret scheduled for deletion.{note}; restore it before then to keep it.", secret_url(secret_id)
    )


async def restore_secret(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    await view.call(_SM + "RestoreSecret", {"SecretId": secret_id})
    view.done("Secret restored.", secret_url(secret_id))


async def put_policy(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    await view.call(
        _SM + "PutResourcePolicy", {"SecretId": secret_id, "ResourcePolicy": view.field("resource_policy")}
    )
    view.done("Resource policy saved.", secret_url(secret_id))


async def delete_policy(view: View) -> web.StreamResponse:
    secret_id = _secret_id(view)
    await view.call(_SM + "DeleteResourcePolicy", {"SecretId": secret_id})
    view.done("Resource policy deleted.", secret_url(secret_id))


# -- KMS ----------------------------------------------------------------------------------------------------


async def kms_page(view: View) -> web.StreamResponse:
    body: dict[str, Any] = {"Limit": 50}
    marker = view.query("marker")
    if marker:
        body["Marker"] = marker
    listing = await view.call(_KMS + "ListKeys", body)
    keys = []
    for entry in listing.get("Keys", []):
        described, error = await view.optional(_KMS + "DescribeKey", {"KeyId": entry.get("KeyId", "")})
        keys.append({"entry": entry, "meta": (described or {}).get("KeyMetadata", {}), "error": error})
    aliases, aliases_error = await view.optional(_KMS + "ListAliases", {"Limit": 100})
    next_marker = listing.get("NextMarker") if listing.get("Truncated") else None
    return view.render(
        "kms.html",
        keys=keys,
        aliases=(aliases or {}).get("Aliases", []),
        aliases_error=aliases_error,
        next_url="/kms?" + urlencode({"marker": next_marker}) if next_marker else "",
    )


# -- the audit trail -------------------------------------------------------------------------------------


def _epoch(text: str, label: str) -> float | None:
    """A ``datetime-local`` field (``YYYY-MM-DDTHH:MM``, read as UTC) as epoch seconds."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise errors.InvalidParameter(f"{label} is not a date and time (YYYY-MM-DDTHH:MM, UTC).") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


async def audit_page(view: View) -> web.StreamResponse:
    attribute = view.query("attribute", "EventName")
    if attribute not in AUDIT_ATTRIBUTES:
        attribute = "EventName"
    value = view.query("value").strip()
    start, end = view.query("start"), view.query("end")
    body: dict[str, Any] = {"MaxResults": AUDIT_PAGE_SIZE}
    if value:
        body["LookupAttributes"] = [{"AttributeKey": attribute, "AttributeValue": value}]
    start_at, end_at = _epoch(start, "From"), _epoch(end, "To")
    if start_at is not None:
        body["StartTime"] = start_at
    if end_at is not None:
        body["EndTime"] = end_at
    token = view.query("next")
    if token:
        body["NextToken"] = token
    found = await view.call(_AUDIT + "LookupEvents", body)
    params = {"attribute": attribute, "value": value, "start": start, "end": end}
    next_token = found.get("NextToken")
    return view.render(
        "audit.html",
        events=found.get("Events", []),
        attribute=attribute,
        attributes=AUDIT_ATTRIBUTES,
        value=value,
        start=start,
        end=end,
        next_url="/audit?" + urlencode({**params, "next": next_token}) if next_token else "",
    )
