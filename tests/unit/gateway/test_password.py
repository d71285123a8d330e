"""GetRandomPassword rules: defaults, lengths, exclusions, required classes, impossible requests,
and that the draw is uniform over the valid passwords (seeded source, so the statistics are reproducible)."""

from __future__ import annotations

import random
import secrets
import string
from collections import Counter
from itertools import product
from typing import Any

import pytest

from coffer.core import errors
from coffer.core.password import PasswordRequest, character_classes, generate_password

UPPER, LOWER, DIGITS, PUNCT = (
    set(string.ascii_uppercase),
    set(string.ascii_lowercase),
    set(string.digits),
    set(string.punctuation),
)


def gen(seed: int = 7, **kw: object) -> str:
    return generate_password(PasswordRequest(**kw), random.Random(seed))  # type: ignore[arg-type]


def test_defaults_are_32_chars_from_the_94_printable_without_space_and_every_class() -> None:
    for seed in range(50):
        pw = gen(seed)
        assert len(pw) == 32
        assert set(pw) <= UPPER | LOWER | DIGITS | PUNCT
        assert " " not in pw
        for cls in (UPPER, LOWER, DIGITS, PUNCT):
            assert set(pw) & cls
    assert len(string.punctuation) == 32


def test_system_random_is_an_accepted_source() -> None:
    pw = generate_password(PasswordRequest(password_length=64), secrets.SystemRandom())
    assert len(pw) == 64


@pytest.mark.parametrize("length", [1, 2, 4, 5, 100, 4096])
def test_lengths_within_bounds(length: int) -> None:
    pw = gen(password_length=length, require_each_included_type=length >= 4)
    assert len(pw) == length


@pytest.mark.parametrize(
    ("length", "fragment"),
    [
        (0, "greater than or equal to 1"),
        (-3, "greater than or equal to 1"),
        (4097, "less than or equal to 4096"),
    ],
)
def test_length_out_of_model_bounds_is_a_validation_error(length: int, fragment: str) -> None:
    with pytest.raises(errors.Validation) as info:
        gen(password_length=length)
    assert info.value.code == "ValidationException"
    assert "passwordLength" in info.value.message and fragment in info.value.message


def test_exclude_characters_longer_than_4096_is_a_validation_error() -> None:
    with pytest.raises(errors.Validation):
        gen(exclude_characters="a" * 4097)


def test_exclude_characters_removes_each_character() -> None:
    excluded = "/@\"'\\aeiouAEIOU0"
    for seed in range(30):
        pw = gen(seed, password_length=200, exclude_characters=excluded)
        assert not set(pw) & set(excluded)


@pytest.mark.parametrize(
    ("flag", "cls"),
    [
        ("exclude_numbers", DIGITS),
        ("exclude_punctuation", PUNCT),
        ("exclude_uppercase", UPPER),
        ("exclude_lowercase", LOWER),
    ],
)
def test_exclude_flags_drop_whole_classes(flag: str, cls: set[str]) -> None:
    for seed in range(20):
        pw = gen(seed, password_length=300, **{flag: True})
        assert not set(pw) & cls
        assert len(pw) == 300


def test_include_space_makes_space_a_required_class() -> None:
    for seed in range(30):
        pw = gen(seed, password_length=5, include_space=True)
        assert " " in pw
    assert character_classes(PasswordRequest(include_space=True))[-1] == " "


def test_without_require_each_type_a_class_may_be_missing() -> None:
    # Lowercase letters only would be impossible to miss with the requirement on; without it, a short
    # password over all classes misses some class in most draws.
    missing = 0
    for seed in range(200):
        pw = gen(seed, password_length=4, require_each_included_type=False)
        if not all(set(pw) & cls for cls in (UPPER, LOWER, DIGITS, PUNCT)):
            missing += 1
    assert missing > 100


def test_a_class_emptied_by_exclude_characters_is_no_longer_required() -> None:
    pw = gen(password_length=3, exclude_characters=string.digits)
    assert len(pw) == 3 and not set(pw) & DIGITS


@pytest.mark.parametrize(
    "kw",
    [
        {
            "exclude_numbers": True,
            "exclude_punctuation": True,
            "exclude_uppercase": True,
            "exclude_lowercase": True,
        },
        {"exclude_characters": string.ascii_letters + string.digits + string.punctuation},
        {"password_length": 3},  # four classes required
        {"password_length": 4, "include_space": True},  # five classes required
    ],
)
def test_impossible_requests_are_invalid_parameter(kw: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidParameter) as info:
        gen(**kw)
    assert info.value.code == "InvalidParameterException"


def test_only_space_left_works_when_space_is_included() -> None:
    pw = gen(
        password_length=6,
        include_space=True,
        exclude_numbers=True,
        exclude_punctuation=True,
        exclude_uppercase=True,
        exclude_lowercase=True,
    )
    assert pw == " " * 6


def test_exactly_uniform_over_valid_passwords() -> None:
    # Pool: upper {A}, lower {b}; length 4, both required. The 2^4 - 2 = 14 valid strings must be equally
    # likely. The classic shortcut (one A, one b, two random fills, shuffle) draws each string with a weight
    # proportional to (#A x #b), so "AAbb" would come 4/3 as often as "AAAb": its chi-square here is ~300.
    excluded = string.ascii_uppercase.replace("A", "") + string.ascii_lowercase.replace("b", "")
    rng = random.Random(1234)
    req = PasswordRequest(
        password_length=4, exclude_characters=excluded, exclude_numbers=True, exclude_punctuation=True
    )
    n = 14_000
    counts = Counter(generate_password(req, rng) for _ in range(n))
    valid = {"".join(p) for p in product("Ab", repeat=4) if "A" in p and "b" in p}
    assert len(valid) == 14
    assert set(counts) == valid
    expected = n / len(valid)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 34.5, chi2  # chi-square, 13 degrees of freedom, p = 0.001


def test_uniform_with_unequal_class_sizes() -> None:
    # upper {A,B,C}, lower {d}, length 4: 4^4 - 3^4 - 1 = 174 valid strings, each 1/174.
    excluded = string.ascii_uppercase[3:] + string.ascii_lowercase.replace("d", "")
    rng = random.Random(4321)
    req = PasswordRequest(
        password_length=4, exclude_characters=excluded, exclude_numbers=True, exclude_punctuation=True
    )
    n = 34_800
    counts = Counter(generate_password(req, rng) for _ in range(n))
    assert len(counts) == 174
    expected = n / 174
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 238.0, chi2  # chi-square, 173 degrees of freedom, p ~ 0.001


def test_character_frequencies_are_flat_in_long_passwords() -> None:
    rng = random.Random(99)
    text = "".join(generate_password(PasswordRequest(password_length=4096), rng) for _ in range(8))
    counts = Counter(text)
    assert len(counts) == 94
    expected = len(text) / 94
    assert all(abs(c - expected) < expected * 0.25 for c in counts.values())
