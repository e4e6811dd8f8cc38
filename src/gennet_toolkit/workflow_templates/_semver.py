"""Semantic versions (semver.org 2.0.0): parsing, precedence, and a sortable key for SQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

__all__ = ["SemVer"]

# The grammar from semver.org, without build metadata (see SemVer's docstring).
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
)
_MAX_LENGTH = 64
# Numbers are zero-padded to this width in the sort key, so they are capped below 10**10.
_WIDTH = 10
_MAX_NUMBER = 10**_WIDTH - 1


@total_ordering
@dataclass(frozen=True, slots=True)
class SemVer:
    """A semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``, ordered by semver precedence.

    ``SemVer.parse("1.10.0") > SemVer.parse("1.9.0")`` and
    ``SemVer.parse("1.0.0-rc.1") < SemVer.parse("1.0.0")``. Build metadata (``+build``)
    is refused: semver ignores it for precedence, so two published versions differing
    only in it could not be told apart. Numbers are capped at 10 digits.
    """

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: object) -> SemVer:
        """Parse ``text``; raise :class:`ValueError` (no input echoed) when it is not semver."""
        if not isinstance(text, str) or len(text) > _MAX_LENGTH:
            raise ValueError("a version must be a semantic version string of at most 64 chars")
        m = _SEMVER.fullmatch(text)
        if m is None:
            raise ValueError("not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE])")
        major, minor, patch = int(m[1]), int(m[2]), int(m[3])
        pre: tuple[int | str, ...] = ()
        if m[4]:
            pre = tuple(int(p) if p.isdigit() else p for p in m[4].split("."))
        numbers = [major, minor, patch, *(p for p in pre if isinstance(p, int))]
        if any(n > _MAX_NUMBER for n in numbers):
            raise ValueError("version numbers are limited to 10 digits")
        return cls(major, minor, patch, pre)

    @property
    def is_prerelease(self) -> bool:
        """Whether this is a pre-release (``1.0.0-rc.1``)."""
        return bool(self.prerelease)

    def _precedence(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after all its pre-releases; numeric identifiers before
        # alphanumeric ones; a shorter identifier list first when it is a prefix.
        ids = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, ids)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._precedence() < other._precedence()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            return core + "-" + ".".join(str(p) for p in self.prerelease)
        return core

    def sort_key(self) -> str:
        """An ASCII string whose bytewise order is semver precedence (for SQL ``ORDER BY``).

        Numbers are zero-padded; ``~`` (after every identifier character) marks a
        release; identifiers are joined by ``!`` (before every identifier character) so
        that a prefix list sorts first; numeric identifiers get ``0``, others ``1``.
        Compare it with a binary collation (``COLLATE "C"`` on PostgreSQL).
        """
        core = f"{self.major:0{_WIDTH}d}.{self.minor:0{_WIDTH}d}.{self.patch:0{_WIDTH}d}"
        if not self.prerelease:
            return core + "~"
        parts = [f"0{p:0{_WIDTH}d}" if isinstance(p, int) else f"1{p}" for p in self.prerelease]
        return core + "-" + "!".join(parts)
