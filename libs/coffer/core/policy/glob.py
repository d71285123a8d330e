"""Wildcard patterns of the policy language: ``*`` (any run of characters, possibly empty) and ``?``
(exactly one character), nothing else. Pure.

Deliberately not ``fnmatch`` (it treats ``[...]`` as a character class and may fold case) and not a regex
built from policy text: a pattern is split at its stars into chunks once, and matching anchors the first chunk
at the start, the last at the end and finds the middle ones left to right -
linear in practice, no backtracking.

A pattern is built from *tokens* so that text substituted from a policy variable (a tag value holding ``*``)
stays literal: only tokens marked as wildcards act as wildcards.
"""

from __future__ import annotations

from collections.abc import Iterable

STAR = object()  # token: any run of characters
QMARK = object()  # token: exactly one character

Token = str | object


class _Chunk:
    """Literal text between two stars, where some positions may be ``?`` (any one character)."""

    __slots__ = ("length", "pieces", "text")

    def __init__(self, parts: list[str | None]) -> None:
        # parts: one entry per character; None = "?"
        self.length = len(parts)
        if all(p is not None for p in parts):
            self.text: str | None = "".join(p for p in parts if p is not None)
            self.pieces: tuple[tuple[int, str], ...] = ()
        else:
            self.text = None
            pieces: list[tuple[int, str]] = []
            run: list[str] = []
            start = 0
            for i, p in enumerate(parts):
                if p is None:
                    if run:
                        pieces.append((start, "".join(run)))
                        run = []
                    start = i + 1
                else:
                    if not run:
                        start = i
                    run.append(p)
            if run:
                pieces.append((start, "".join(run)))
            self.pieces = tuple(pieces)

    def at(self, s: str, i: int) -> bool:
        """Does the chunk match ``s`` starting at index ``i``?"""
        if i < 0 or i + self.length > len(s):
            return False
        if self.text is not None:
            return s.startswith(self.text, i)
        return all(s.startswith(lit, i + off) for off, lit in self.pieces)

    def find(self, s: str, i: int) -> int:
        """The first index >= i where the chunk matches, or -1."""
        if self.text is not None:
            return s.find(self.text, i)
        for j in range(i, len(s) - self.length + 1):
            if self.at(s, j):
                return j
        return -1


class Glob:
    """A compiled wildcard pattern; ``fold`` makes matching case-insensitive (Unicode casefold)."""

    __slots__ = ("_chunks", "_exact", "_fold", "_prefix")

    def __init__(self, tokens: Iterable[Token], *, fold: bool = False) -> None:
        self._fold = fold
        chunks: list[list[str | None]] = [[]]
        for tok in tokens:
            if tok is STAR:
                chunks.append([])
            elif tok is QMARK:
                chunks[-1].append(None)
            else:
                assert isinstance(tok, str)
                text = tok.casefold() if fold else tok
                chunks[-1].extend(text)
        if len(chunks) == 1 and all(c is not None for c in chunks[0]):
            self._exact: str | None = "".join(c for c in chunks[0] if c is not None)
        else:
            self._exact = None
        self._chunks = tuple(_Chunk(c) for c in chunks)
        # "text*" (no "?"): a plain prefix test; "*" alone is the empty prefix
        self._prefix: str | None = None
        if len(chunks) == 2 and not chunks[1] and all(c is not None for c in chunks[0]):
            self._prefix = "".join(c for c in chunks[0] if c is not None)

    @classmethod
    def parse(cls, pattern: str, *, fold: bool = False) -> Glob:
        """Every ``*`` and ``?`` of ``pattern`` is a wildcard."""
        return cls(tokenize(pattern), fold=fold)

    @classmethod
    def literal(cls, text: str, *, fold: bool = False) -> Glob:
        return cls([text], fold=fold)

    def match(self, s: str) -> bool:
        if self._fold:
            s = s.casefold()
        if self._exact is not None:
            return s == self._exact
        if self._prefix is not None:
            return s.startswith(self._prefix)
        chunks = self._chunks
        first = chunks[0]
        if len(chunks) == 1:
            return first.length == len(s) and first.at(s, 0)
        last = chunks[-1]
        if first.length + last.length > len(s):
            return False
        if not first.at(s, 0) or not last.at(s, len(s) - last.length):
            return False
        pos = first.length
        end = len(s) - last.length
        for mid in chunks[1:-1]:
            j = mid.find(s, pos)
            if j < 0 or j + mid.length > end:
                return False
            pos = j + mid.length
        return True


def tokenize(pattern: str) -> list[Token]:
    """Split a pattern into literal runs and wildcard tokens."""
    out: list[Token] = []
    run: list[str] = []
    for ch in pattern:
        if ch == "*" or ch == "?":
            if run:
                out.append("".join(run))
                run = []
            out.append(STAR if ch == "*" else QMARK)
        else:
            run.append(ch)
    if run:
        out.append("".join(run))
    return out


def has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text
