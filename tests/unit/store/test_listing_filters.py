"""ListSecrets word splitting, filters, sorting and pagination, with the AWS-recorded examples."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from coffer.core import errors
from coffer.core.listing import Listable, ListFilter, page, split_words
from coffer.core.model import Tag

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ids = itertools.count(1)


def item(
    name: str,
    *,
    description: str | None = None,
    tags: list[tuple[str, str]] | None = None,
    age: int = 0,
    owning_service: str | None = None,
    primary_region: str | None = None,
    accessed: date | None = None,
) -> Listable:
    n = next(_ids)
    return Listable(
        ident=n,
        name=name,
        created_date=T0 + timedelta(seconds=n),
        last_changed_date=T0 + timedelta(seconds=1000 - n),
        description=description,
        tags=None if tags is None else tuple(Tag(k, v) for k, v in tags),
        owning_service=owning_service,
        primary_region=primary_region,
        last_accessed_date=accessed,
    )


def names(items: list[Listable], *filters: tuple[str, list[str]]) -> list[str]:
    return [i.name for i in page(items, filters=[ListFilter(k, tuple(v)) for k, v in filters]).items]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("prod/AppBeta/x", ["prod", "App", "Beta", "x"]),
        ("prod-AppBeta/x", ["prod-AppBeta/x"]),  # two different separators: not split
        ("COMPANYthings", ["COMPAN", "Ythings"]),
        ("one and two", ["one", "and", "two"]),
        ("MyTest", ["My", "Test"]),
        ("a.b.c", ["a", "b", "c"]),
        ("+", []),
        ("ABC DEF", ["ABC", "DEF"]),
    ],
)
def test_word_splitting(text: str, words: list[str]) -> None:
    assert split_words(text) == words


def test_all_filter_recorded_examples() -> None:
    items = [item("prod/AppBeta/x"), item("prod-AppBeta/y"), item("COMPANYthings"), item("SecretThing")]
    assert names(items, ("all", ["AppBeta"])) == ["prod/AppBeta/x"]
    assert names(items, ("all", ["Beta"])) == ["prod/AppBeta/x"]
    assert names(items, ("all", ["prod"])) == ["prod/AppBeta/x", "prod-AppBeta/y"]
    assert names(items, ("all", ["+"])) == []
    assert names(items, ("all", ["ret"])) == []  # mid-word fragment
    assert names(items, ("all", ["pany"])) == []
    assert names(items, ("all", ["sec"])) == ["SecretThing"]  # case-insensitive word prefix
    assert names(items, ("all", ["compan"])) == ["COMPANYthings"]


def test_all_filter_searches_name_description_and_tags() -> None:
    items = [
        item("foo"),
        item("bar", description="foo"),
        item("baz", tags=[("foo", "1")]),
        item("qux", tags=[("1", "foo")]),
        item("multi", tags=[("foo", "foo")]),
        item("none"),
    ]
    assert names(items, ("all", ["foo"])) == ["foo", "bar", "baz", "qux", "multi"]


def test_name_tag_key_and_tag_value_are_case_sensitive_prefixes() -> None:
    items = [item("foo", tags=[("baz", "1")]), item("Foo/x", tags=[("1", "baz")]), item("bar")]
    assert names(items, ("name", ["foo"])) == ["foo"]
    assert names(items, ("name", ["Fo"])) == ["Foo/x"]
    assert names(items, ("name", ["foo", "bar"])) == ["foo", "bar"]  # OR within a filter
    assert names(items, ("tag-key", ["ba"])) == ["foo"]
    assert names(items, ("tag-value", ["baz"])) == ["Foo/x"]
    assert names(items, ("tag-key", ["BAZ"])) == []


def test_description_matches_every_word_case_insensitively() -> None:
    items = [
        item("foo", description="one two"),
        item("bar", description="one and two"),
        item("baz", description="one"),
        item("qux", description="two"),
        item("none", description="unrelated"),
        item("empty"),
    ]
    assert names(items, ("description", ["one two"])) == ["foo", "bar"]
    assert names(items, ("description", ["ONE"])) == ["foo", "bar", "baz"]
    # same key twice: AND
    assert names(items, ("description", ["one"]), ("description", ["two"])) == ["foo", "bar"]


def test_negation() -> None:
    items = [
        item("foo", description="one two"),
        item("bar", description="one and two"),
        item("baz", description="one"),
        item("qux", description="two"),
        item("none", description="unrelated"),
    ]
    assert names(items, ("description", ["one", "!two"])) == ["foo", "bar", "baz", "none"]
    assert names(items, ("description", ["!o"])) == ["qux", "none"]
    assert names(items, ("name", ["!b"])) == ["foo", "qux", "none"]


def test_different_keys_are_anded() -> None:
    items = [
        item("foo", tags=[("right", "right")]),
        item("bar", tags=[("right", "wrong")]),
        item("baz", tags=[("wrong", "right")]),
        item("qux", tags=[("wrong", "wrong")]),
    ]
    assert names(items, ("tag-key", ["right"]), ("tag-value", ["right"])) == ["foo"]


def test_owning_service_and_primary_region() -> None:
    items = [item("a", owning_service="rds"), item("b", primary_region="eu-west-1"), item("c")]
    assert names(items, ("owning-service", ["n/a"])) == []
    assert names(items, ("owning-service", ["RD"])) == ["a"]
    assert names(items, ("primary-region", ["eu-"])) == ["b"]


def test_sorting() -> None:
    a = item("b-secret", accessed=date(2026, 1, 3))
    b = item("a-secret")
    c = item("c-secret", accessed=date(2026, 1, 2))
    items = [c, a, b]
    assert [i.name for i in page(items).items] == [
        "b-secret",
        "a-secret",
        "c-secret",
    ]  # created, oldest first
    assert [i.name for i in page(items, sort_order="desc").items] == ["c-secret", "a-secret", "b-secret"]
    assert [i.name for i in page(items, sort_by="name").items] == ["a-secret", "b-secret", "c-secret"]
    assert [i.name for i in page(items, sort_by="last-changed-date").items] == [
        "c-secret",
        "a-secret",
        "b-secret",
    ]
    assert [i.name for i in page(items, sort_by="last-accessed-date").items] == [
        "a-secret",
        "c-secret",
        "b-secret",
    ]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_pagination_walks_everything_once(order: str) -> None:
    items = [item(f"s{i:02d}") for i in range(23)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        pg = page(items, max_results=5, next_token=token, sort_order=order, sort_by="name")
        seen += [i.name for i in pg.items]
        pages += 1
        token = pg.next_token
        if token is None:
            break
    expected = sorted(i.name for i in items)
    assert seen == (expected if order == "asc" else expected[::-1])
    assert pages == 5


def test_bad_or_foreign_tokens_are_refused() -> None:
    items = [item(f"t{i}") for i in range(5)]
    token = page(items, max_results=2).next_token
    assert token is not None
    for bad in ("garbage", token[:-2] + "zz", "", "AAAA"):
        with pytest.raises(errors.InvalidNextToken) as info:
            page(items, max_results=2, next_token=bad)
        assert info.value.code == "InvalidNextTokenException"
    # a token of another query (different sort) is refused too
    with pytest.raises(errors.InvalidNextToken):
        page(items, max_results=2, next_token=token, sort_by="name")
