"""Permission strings ``resource:action`` and their segment-wise wildcard rules."""

from __future__ import annotations

import re
from typing import Final

from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["WILDCARD", "Permission"]

#: The wildcard: a whole segment only (``network:*``, ``*:read``, ``*:*``).
WILDCARD: Final = "*"

_MAX_SEGMENT = 64
# Lowercase only: "Network:read" and "network:read" must never be two permissions that
# a policy author believes are one. Dots name sub-resources ("network.export") but are
# plain characters: "network:*" does not reach "network.export:read".
_SEGMENT = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*")


def _segment(value: str, what: str, original: str) -> str:
    if value == WILDCARD:
        return value
    if len(value) > _MAX_SEGMENT or _SEGMENT.fullmatch(value) is None:
        raise ConfigurationError(
            f"invalid permission {original[:80]!r}: the {what} must be '*' or lowercase "
            "words (a-z, 0-9, '_', '-') joined by '.', at most 64 characters; "
            "'*' only stands for a whole segment"
        )
    return value


class Permission:
    """A permission ``resource:action`` such as ``network:read``; ``*`` is a whole-segment wildcard.

    ``Permission("network:*")`` grants every action on networks, ``Permission("*:read")``
    reading everything, ``Permission("*:*")`` everything. A ``*`` inside a word
    (``net*:read``) is refused, so a grant never reaches a name it only starts like.
    Bad strings raise :class:`~gennet_toolkit.exceptions.ConfigurationError`.

        Permission("network:read").implies(Permission("network:read"))   # True
        Permission("network:*").implies(Permission("network:delete"))     # True
        Permission("network:read").implies(Permission("network:*"))       # False
    """

    __slots__ = ("_hash", "_text", "action", "resource")

    resource: str
    action: str

    def __init__(self, value: str | Permission) -> None:
        if isinstance(value, Permission):
            resource, action = value.resource, value.action
        else:
            if not isinstance(value, str):
                raise ConfigurationError(
                    f"a permission must be a 'resource:action' string, got {type(value).__name__}"
                )
            parts = value.split(":")
            if len(parts) != 2:
                raise ConfigurationError(
                    f"invalid permission {value[:80]!r}: expected 'resource:action' "
                    "(exactly one ':')"
                )
            resource = _segment(parts[0], "resource", value)
            action = _segment(parts[1], "action", value)
        self.resource = resource
        self.action = action
        self._text = f"{resource}:{action}"
        self._hash = hash(self._text)

    @classmethod
    def parse(cls, value: str | Permission) -> Permission:
        """``value`` as a :class:`Permission` (returned as is when it already is one)."""
        return value if isinstance(value, Permission) else cls(value)

    @property
    def is_wildcard(self) -> bool:
        """True if either segment is ``*``."""
        return WILDCARD in (self.resource, self.action)

    def implies(self, other: str | Permission) -> bool:
        """True if granting ``self`` grants ``other`` (whose wildcards need ours)."""
        req = Permission.parse(other)
        return self.resource in (WILDCARD, req.resource) and self.action in (WILDCARD, req.action)

    def overlaps(self, other: str | Permission) -> bool:
        """True if some concrete permission is covered by both (how a deny rule hits a request)."""
        req = Permission.parse(other)
        return (WILDCARD in (self.resource, req.resource) or self.resource == req.resource) and (
            WILDCARD in (self.action, req.action) or self.action == req.action
        )

    def candidates(self) -> tuple[str, ...]:
        """The grant strings that imply this permission (at most four, exact one first)."""
        r, a = self.resource, self.action
        seen: dict[str, None] = {}
        for res in (r, WILDCARD):
            for act in (a, WILDCARD):
                seen[f"{res}:{act}"] = None
        return tuple(seen)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Permission({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Permission):
            return self._text == other._text
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: Permission) -> bool:
        return self._text < other._text
