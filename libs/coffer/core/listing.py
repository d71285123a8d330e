"""ListSecrets filtering, sorting and pagination. Pure: :func:`page` is the reference semantics on plain
summaries of secrets; the store runs the same in SQL on the terms of :func:`list_terms`, with the keyset
cursors of :func:`cursor`.

Matching per filter key:

=================  ===============================================================  ===============
key                matches                                                          case
=================  ===============================================================  ===============
name               prefix of the name                                               sensitive
description        every word of the value prefixes some word of the description    insensitive
tag-key            prefix of any tag key                                            sensitive
tag-value          prefix of any tag value                                          sensitive
primary-region     prefix of the primary region                                     sensitive
owning-service     prefix of the owning service                                     insensitive
all                word match (as description) in the name, description, any tag   insensitive
                   key or any tag value
=================  ===============================================================  ===============

Several values in one filter are OR-ed; several filters (even with the same key) are AND-ed. A value starting
with ``!`` matches exactly the secrets its positive form does not match.

Word splitting, as recorded against AWS: words break at spaces, at one of ``/ - _ + = . @`` and at case
changes (``COMPANYthings`` -> ``COMPAN`` + ``Ythings``); a text mixing two different separators is one word;
a value that is only a separator has no words and matches nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from coffer.core import errors
from coffer.core.model import Tag

SEPARATORS = ("/", "-", "_", "+", "=", ".", "@")
_CASE_SPLIT = re.compile(r"([^a-z][a-z]+)")

DEFAULT_SORT_BY = "created-date"
DEFAULT_SORT_ORDER = "asc"


@dataclass(frozen=True, slots=True)
class ListFilter:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Listable:
    """What filtering and sorting need to know about one secret. ``ident`` is a stable unique tie-breaker."""

    ident: int
    name: str
    created_date: datetime
    last_changed_date: datetime
    description: str | None = None
    tags: tuple[Tag, ...] | None = None
    owning_service: str | None = None
    primary_region: str | None = None
    last_accessed_date: date | None = None


def _split_case(parts: Sequence[str]) -> list[str]:
    words: list[str] = []
    for part in parts:
        for piece in _CASE_SPLIT.split(part):
            piece = piece.strip()
            if piece:
                words.extend(w for w in piece.split() if w)
    return words


def split_words(text: str) -> list[str]:
    """Split a text into the words the ``all``/``description`` filters match against (module docstring)."""
    if text in SEPARATORS:
        return []
    present = [sep for sep in SEPARATORS if sep in text]
    if len(present) > 1:
        return [text]
    if present:
        return _split_case(text.split(present[0]))
    return _split_case([text])


def _words_match(pattern: str, text: str) -> bool:
    wanted = [w.lower() for w in split_words(pattern)]
    if not wanted:
        return False
    have = [w.lower() for w in split_words(text)]
    return all(any(h.startswith(w) for h in have) for w in wanted)


def _prefix(pattern: str, texts: Sequence[str], *, case_sensitive: bool = True) -> bool:
    if case_sensitive:
        return any(t.startswith(pattern) for t in texts)
    low = pattern.lower()
    return any(t.lower().startswith(low) for t in texts)


def _positive(key: str, pattern: str, item: Listable) -> bool:
    tags = item.tags or ()
    if key == "name":
        return _prefix(pattern, [item.name])
    if key == "description":
        return item.description is not None and _words_match(pattern, item.description)
    if key == "tag-key":
        return _prefix(pattern, [t.key for t in tags])
    if key == "tag-value":
        return _prefix(pattern, [t.value for t in tags])
    if key == "primary-region":
        return item.primary_region is not None and _prefix(pattern, [item.primary_region])
    if key == "owning-service":
        return item.owning_service is not None and _prefix(
            pattern, [item.owning_service], case_sensitive=False
        )
    if key == "all":
        texts = [item.name]
        if item.description:
            texts.append(item.description)
        texts.extend(t.key for t in tags)
        texts.extend(t.value for t in tags)
        return any(_words_match(pattern, t) for t in texts)
    raise errors.InvalidParameter(f"Invalid filter key: {key}")


def value_matches(key: str, value: str, item: Listable) -> bool:
    """One filter value against one secret (``!`` negates)."""
    if value.startswith("!"):
        return not _positive(key, value[1:], item)
    return _positive(key, value, item)


def filter_matches(flt: ListFilter, item: Listable) -> bool:
    return any(value_matches(flt.key, v, item) for v in flt.values)


def matches(filters: Sequence[ListFilter], item: Listable) -> bool:
    return all(filter_matches(f, item) for f in filters)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_us(dt: datetime) -> int:
    return (dt - _EPOCH) // _MICROSECOND


def from_epoch_us(us: int) -> datetime:
    return _EPOCH + us * _MICROSECOND


_SORT_KEYS: dict[str, Callable[[Listable], list[Any]]] = {
    "created-date": lambda s: [_epoch_us(s.created_date), s.ident],
    "last-changed-date": lambda s: [_epoch_us(s.last_changed_date), s.ident],
    "last-accessed-date": lambda s: [
        0 if s.last_accessed_date is None else 1,
        0 if s.last_accessed_date is None else s.last_accessed_date.toordinal(),
        s.ident,
    ],
    "name": lambda s: [s.name, s.ident],
}


def sort_key(item: Listable, sort_by: str) -> list[Any]:
    return _SORT_KEYS[sort_by](item)


def query_fingerprint(*parts: object) -> str:
    """A short digest of the query a NextToken belongs to (a token from another query is rejected)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    check = hashlib.sha256(raw).digest()[:4]
    return base64.urlsafe_b64encode(check + raw).decode().rstrip("=")


def decode_token(token: str, *, fingerprint: str) -> dict[str, Any]:
    """Reverse :func:`encode_token`; anything malformed, tampered or from another query is
    InvalidNextTokenException."""
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        check, raw = data[:4], data[4:]
        if len(data) < 5 or hashlib.sha256(raw).digest()[:4] != check:
            raise ValueError("checksum")
        payload = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise errors.InvalidNextToken() from None
    if not isinstance(payload, dict) or payload.get("q") != fingerprint or "k" not in payload:
        raise errors.InvalidNextToken()
    return payload


#: Keyset shapes per sort: the types of the sort key a NextToken carries.
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "created-date": (int, int),
    "last-changed-date": (int, int),
    "last-accessed-date": (int, int, int),
    "name": (str, int),
}
_MAX_KEY_INT = 2**62


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where one ListSecrets page starts: the sort, and the sort key of the previous page's last item."""

    sort_by: str
    descending: bool
    fingerprint: str
    after: list[Any] | None


def cursor(
    filters: Sequence[ListFilter],
    *,
    sort_by: str | None,
    sort_order: str | None,
    next_token: str | None,
    scope: str,
) -> Cursor:
    """Decode a NextToken for this query. The token is opaque and checksummed, tied to the query (scope, sort
    and filters) and holds only a sort key of the expected shape (anything else is InvalidNextToken). A
    forged token can only move the start of the caller's own listing."""
    by = sort_by or DEFAULT_SORT_BY
    order = sort_order or DEFAULT_SORT_ORDER
    fingerprint = query_fingerprint(scope, by, order, [(f.key, list(f.values)) for f in filters])
    after: list[Any] | None = None
    if next_token is not None:
        after = decode_token(next_token, fingerprint=fingerprint)["k"]
        shape = _KEY_TYPES[by]
        if (
            not isinstance(after, list)
            or len(after) != len(shape)
            or any(type(v) is not t for v, t in zip(after, shape, strict=True))
            or any(isinstance(v, int) and abs(v) > _MAX_KEY_INT for v in after)
        ):
            raise errors.InvalidNextToken()
    return Cursor(sort_by=by, descending=order == "desc", fingerprint=fingerprint, after=after)


def token_after(cur: Cursor, last_key: list[Any]) -> str:
    return encode_token({"v": 1, "q": cur.fingerprint, "k": last_key})


def cut(cur: Cursor, rows: Sequence[Listable], max_results: int) -> Page:
    """The page of ``rows`` (already filtered and sorted, up to ``max_results + 1`` of them): the first
    ``max_results``, and a NextToken when there were more."""
    chunk = list(rows[:max_results])
    token = token_after(cur, sort_key(chunk[-1], cur.sort_by)) if len(rows) > max_results else None
    return Page(items=chunk, next_token=token)


# --- what the SQL listing matches against -------------------------------------------------------------------

#: Term kinds (see :func:`list_terms`).
WORD, TAG_KEY, TAG_VALUE, OWNER = "w", "k", "v", "o"
NAME_FIELD, DESCRIPTION_FIELD = 0, 1


def list_terms(
    name: str, description: str | None, tags: Sequence[Tag] | None, owning_service: str | None
) -> list[tuple[str, int, str]]:
    """The (kind, field, term) rows a secret is listed under: the lower-cased words of its name (field 0),
    description (field 1) and of each tag key and value (fields 2+2i and 3+2i), every tag key and value whole,
    and the lower-cased owning service. Matching prefixes of these rows is exactly :func:`matches`."""
    out: dict[tuple[str, int, str], None] = {}

    def words(field: int, text: str) -> None:
        for w in split_words(text):
            out[(WORD, field, w.lower())] = None

    words(NAME_FIELD, name)
    if description:
        words(DESCRIPTION_FIELD, description)
    for i, tag in enumerate(tags or ()):
        words(2 + 2 * i, tag.key)
        words(3 + 2 * i, tag.value)
        out[(TAG_KEY, i, tag.key)] = None
        out[(TAG_VALUE, i, tag.value)] = None
    if owning_service is not None:
        out[(OWNER, 0, owning_service.lower())] = None
    return list(out)


def pattern_words(pattern: str) -> list[str]:
    """The lower-cased words of a description/all filter value (none: it matches nothing)."""
    return [w.lower() for w in split_words(pattern)]


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The code-point range [low, high) of the strings starting with ``prefix`` (high None: no upper bound).
    In byte order (UTF-8, collation "C") that range is one index range scan."""
    chars = list(prefix)
    while chars:
        nxt = ord(chars[-1]) + 1
        if 0xD800 <= nxt <= 0xDFFF:
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            chars[-1] = chr(nxt)
            return prefix, "".join(chars)
        chars.pop()
    return prefix, None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Listable]
    next_token: str | None


def page(
    items: Sequence[Listable],
    *,
    filters: Sequence[ListFilter] = (),
    sort_by: str | None = None,
    sort_order: str | None = None,
    max_results: int = 100,
    next_token: str | None = None,
    scope: str = "",
) -> Page:
    """Filter, sort and cut one page. The token carries the sort key of the last item returned (keyset
    pagination), so secrets created or deleted between pages neither repeat nor shift the rest."""
    cur = cursor(filters, sort_by=sort_by, sort_order=sort_order, next_token=next_token, scope=scope)
    by, descending, after = cur.sort_by, cur.descending, cur.after
    selected = sorted(
        (i for i in items if matches(filters, i)), key=lambda i: sort_key(i, by), reverse=descending
    )
    if after is not None:
        try:
            if descending:
                selected = [i for i in selected if sort_key(i, by) < after]
            else:
                selected = [i for i in selected if sort_key(i, by) > after]
        except TypeError:
            raise errors.InvalidNextToken() from None
    return cut(cur, selected[: max_results + 1], max_results)
