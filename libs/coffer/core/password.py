"""GetRandomPassword, pure: the random source comes in as an argument.

The password is drawn **uniformly from the set of all strings that satisfy the request**: every position
chooses from the whole pool, and when ``require_each_included_type`` is on, the choice is weighted by the
exact number of valid completions (inclusion-exclusion over the classes still missing). That is the same
distribution as "draw uniformly, retry until every class is present", without the unbounded retries, and
without the bias of "put one of each class at a random position, then fill the rest".
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Protocol, TypeVar

from coffer.core import errors

T = TypeVar("T")

MIN_LENGTH = 1
MAX_LENGTH = 4096
MAX_EXCLUDE_CHARACTERS = 4096
DEFAULT_LENGTH = 32

UPPERCASE = string.ascii_uppercase
LOWERCASE = string.ascii_lowercase
NUMBERS = string.digits
PUNCTUATION = string.punctuation  # the 32 characters AWS uses, in ASCII order
SPACE = " "


class RandomSource(Protocol):
    """What the generator needs from a CSPRNG: ``secrets.SystemRandom()`` in production, a seeded
    ``random.Random`` in tests (both provide these two methods)."""

    def choice(self, seq: Sequence[T], /) -> T: ...

    def randrange(self, stop: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class PasswordRequest:
    """The GetRandomPassword inputs with the AWS defaults (length 32, every class, no space, every included
    class required)."""

    password_length: int = DEFAULT_LENGTH
    exclude_characters: str = ""
    exclude_numbers: bool = False
    exclude_punctuation: bool = False
    exclude_uppercase: bool = False
    exclude_lowercase: bool = False
    include_space: bool = False
    require_each_included_type: bool = True


def _validation(member: str, value: object, constraint: str) -> errors.Validation:
    return errors.Validation(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def character_classes(request: PasswordRequest) -> list[str]:
    """The non-empty character classes left after the Exclude* flags and ExcludeCharacters, in a stable
    order (uppercase, lowercase, numbers, punctuation, space). A class whose every character was excluded
    individually is no longer "included", so it is not required either."""
    excluded = set(request.exclude_characters)
    chosen = [
        (UPPERCASE, request.exclude_uppercase),
        (LOWERCASE, request.exclude_lowercase),
        (NUMBERS, request.exclude_numbers),
        (PUNCTUATION, request.exclude_punctuation),
        (SPACE, not request.include_space),
    ]
    classes = ["".join(c for c in chars if c not in excluded) for chars, dropped in chosen if not dropped]
    return [c for c in classes if c]


def validate(request: PasswordRequest) -> list[str]:
    """Check the model bounds and that the request can be satisfied; return the character classes."""
    if not MIN_LENGTH <= request.password_length <= MAX_LENGTH:
        bound = (
            f"have value greater than or equal to {MIN_LENGTH}"
            if request.password_length < MIN_LENGTH
            else f"have value less than or equal to {MAX_LENGTH}"
        )
        raise _validation("passwordLength", request.password_length, bound)
    if len(request.exclude_characters) > MAX_EXCLUDE_CHARACTERS:
        raise _validation(
            "excludeCharacters",
            f"<{len(request.exclude_characters)} characters>",
            f"have length less than or equal to {MAX_EXCLUDE_CHARACTERS}",
        )
    classes = character_classes(request)
    if not classes:
        raise errors.InvalidParameter(
            "The request excludes every character (ExcludeCharacters and the Exclude* options leave an "
            "empty set), so no password can be generated."
        )
    if request.require_each_included_type and request.password_length < len(classes):
        raise errors.InvalidParameter(
            f"PasswordLength {request.password_length} is too short: RequireEachIncludedType needs at least "
            f"one character from each of the {len(classes)} included character types."
        )
    return classes


def _completions(remaining: int, pool_size: int, missing_sizes: Sequence[int]) -> int:
    """How many strings of ``remaining`` characters over the pool contain at least one character of every
    class in ``missing_sizes`` (inclusion-exclusion over the classes that could be absent)."""
    total = 0
    for k in range(len(missing_sizes) + 1):
        sign = -1 if k % 2 else 1
        for absent in combinations(missing_sizes, k):
            total += sign * (pool_size - sum(absent)) ** remaining
    return total


def generate_password(request: PasswordRequest, source: RandomSource) -> str:
    """A password drawn uniformly from every string of the requested length over the allowed characters
    that (when required) contains each included character type. Raises ValidationException for values out
    of the model bounds and InvalidParameterException for impossible requests."""
    classes = validate(request)
    pool = "".join(classes)
    length = request.password_length
    if not request.require_each_included_type:
        return "".join(source.choice(pool) for _ in range(length))
    missing = set(range(len(classes)))
    out: list[str] = []
    for position in range(length):
        if not missing:
            out.append(source.choice(pool))
            continue
        remaining_after = length - position - 1
        # Weight of each class = its size x the number of valid completions once it is used here.
        weights = [
            len(chars) * _completions(remaining_after, len(pool), [len(classes[j]) for j in missing - {i}])
            for i, chars in enumerate(classes)
        ]
        pick = source.randrange(sum(weights))
        for i, weight in enumerate(weights):
            if pick < weight:
                out.append(source.choice(classes[i]))
                missing.discard(i)
                break
            pick -= weight
    return "".join(out)
