"""Versions, deprecation metadata and Cadwyn-style version changes."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "ApiVersion",
    "ChangeContext",
    "Deprecation",
    "VersionChange",
    "format_version",
    "parse_version",
]

#: A version is an integer (``1``, ``2``) or an ISO date (``2025-06-01``), never both kinds
#: in one API.
ApiVersion: TypeAlias = int | dt.date

_INT = re.compile(r"[0-9]{1,9}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_version(text: str, *, dates: bool) -> ApiVersion | None:
    """Parse a version token as an integer (``dates=False``) or ISO date; ``None`` if malformed."""
    text = text.strip()
    if dates:
        if not _DATE.fullmatch(text):
            return None
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return None
    return int(text) if _INT.fullmatch(text) else None


def format_version(version: ApiVersion) -> str:
    """The canonical text of a version: ``"2"`` or ``"2025-06-01"``."""
    return version.isoformat() if isinstance(version, dt.date) else str(version)


def to_datetime(when: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(when, dt.datetime):
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Deprecation:
    """Deprecation metadata of one version.

    ``sunset``: when the version stops working (RFC 8594 ``Sunset``; a date means 00:00
    UTC that day; afterwards requests get 410). ``since``: when it was deprecated (RFC
    9745 ``Deprecation: @<unix>``). ``link``: a page explaining the migration, sent as
    ``Link: <…>; rel="deprecation"`` (and ``rel="sunset"`` when a sunset is set).
    """

    sunset: dt.date | dt.datetime | None = None
    since: dt.date | dt.datetime | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        sunset, since = self.sunset_at(), self.since_at()
        if sunset is not None and since is not None and sunset < since:
            # RFC 9745 section 3: Sunset must not be earlier than Deprecation.
            raise ConfigurationError("a version's sunset must not be before its deprecation")

    def sunset_at(self) -> dt.datetime | None:
        """The sunset as an aware UTC datetime."""
        return None if self.sunset is None else to_datetime(self.sunset)

    def since_at(self) -> dt.datetime | None:
        """The deprecation moment as an aware UTC datetime."""
        return None if self.since is None else to_datetime(self.since)


@dataclass(frozen=True)
class ChangeContext:
    """What a migration may look at: the route path (version prefix removed), the method,
    the client's version and, for responses, the status code."""

    path: str
    method: str
    version: ApiVersion
    status: int | None = None


class VersionChange:
    """The difference between one version and the version before it.

    Subclass and override :meth:`upgrade_request` (an old client's JSON body → the newer
    shape) and/or :meth:`downgrade_response` (the newer JSON body → the older shape); or
    build one from functions with :meth:`of`. ``paths`` limits the change to route path
    prefixes (after the version prefix), ``methods`` to HTTP methods; empty means all::

        class RenameWeight(VersionChange):
            description = "Edge.weight renamed to confidence"
            paths = ("/edges",)

            def upgrade_request(self, body, ctx):
                if isinstance(body, dict) and "weight" in body:
                    body["confidence"] = body.pop("weight")
                return body

            def downgrade_response(self, body, ctx):
                if isinstance(body, dict) and "confidence" in body:
                    body["weight"] = body.pop("confidence")
                return body

    Migrations receive decoded JSON (dicts and lists they may change in place) and
    return the new value; they must be pure functions of the body and context.
    """

    description: ClassVar[str] = ""
    paths: Sequence[str] = ()
    methods: Sequence[str] = ()

    def upgrade_request(self, body: Any, ctx: ChangeContext) -> Any:
        """Convert a request body from the previous version's shape to this version's."""
        return body

    def downgrade_response(self, body: Any, ctx: ChangeContext) -> Any:
        """Convert a response body from this version's shape to the previous version's."""
        return body

    def applies_to(self, path: str, method: str) -> bool:
        """Whether this change concerns ``method path``."""
        if self.methods and method.upper() not in {m.upper() for m in self.methods}:
            return False
        if not self.paths:
            return True
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.paths)

    def has_request_migration(self) -> bool:
        """True when :meth:`upgrade_request` is overridden."""
        return type(self).upgrade_request is not VersionChange.upgrade_request

    def has_response_migration(self) -> bool:
        """True when :meth:`downgrade_response` is overridden."""
        return type(self).downgrade_response is not VersionChange.downgrade_response

    @classmethod
    def of(
        cls,
        *,
        upgrade_request: Callable[[Any, ChangeContext], Any] | None = None,
        downgrade_response: Callable[[Any, ChangeContext], Any] | None = None,
        paths: Sequence[str] = (),
        methods: Sequence[str] = (),
    ) -> VersionChange:
        """A change from plain functions (either may be omitted)."""
        return _FunctionChange(upgrade_request, downgrade_response, tuple(paths), tuple(methods))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class _FunctionChange(VersionChange):
    def __init__(
        self,
        up: Callable[[Any, ChangeContext], Any] | None,
        down: Callable[[Any, ChangeContext], Any] | None,
        paths: tuple[str, ...],
        methods: tuple[str, ...],
    ) -> None:
        self._up = up
        self._down = down
        self.paths = paths
        self.methods = methods

    def upgrade_request(self, body: Any, ctx: ChangeContext) -> Any:
        return body if self._up is None else self._up(body, ctx)

    def downgrade_response(self, body: Any, ctx: ChangeContext) -> Any:
        return body if self._down is None else self._down(body, ctx)

    def has_request_migration(self) -> bool:
        return self._up is not None

    def has_response_migration(self) -> bool:
        return self._down is not None


@dataclass(frozen=True)
class Chain:
    """Per client version: the request upgrades (oldest first) and response downgrades
    (newest first) between it and the newest version."""

    upgrades: tuple[VersionChange, ...] = ()
    downgrades: tuple[VersionChange, ...] = ()
    steps: tuple[ApiVersion, ...] = field(default=())


def build_chains(
    versions: Sequence[ApiVersion],
    changes: Mapping[ApiVersion, VersionChange | type[VersionChange] | Iterable[Any]],
) -> dict[ApiVersion, Chain]:
    """Pre-compute every version's migration chain once (versions sorted ascending).

    ``changes[v]`` holds the changes introduced *by* version ``v`` (from ``v - 1`` to
    ``v``), so the oldest version cannot carry any.
    """
    per_version: dict[ApiVersion, list[VersionChange]] = {}
    for version, spec in changes.items():
        if version not in versions:
            raise ConfigurationError(f"changes name an unknown version: {version!r}")
        if version == versions[0]:
            raise ConfigurationError(
                "changes are keyed by the version that introduced them; the oldest "
                "version has no predecessor"
            )
        items = [spec] if isinstance(spec, VersionChange | type) else list(spec)
        resolved = []
        for item in items:
            change = item() if isinstance(item, type) else item
            if not isinstance(change, VersionChange):
                raise ConfigurationError(f"not a VersionChange: {item!r}")
            resolved.append(change)
        per_version[version] = resolved
    chains: dict[ApiVersion, Chain] = {}
    for i, version in enumerate(versions):
        newer = versions[i + 1 :]
        up = tuple(c for v in newer for c in per_version.get(v, ()) if c.has_request_migration())
        down = tuple(
            c for v in reversed(newer) for c in per_version.get(v, ()) if c.has_response_migration()
        )
        chains[version] = Chain(up, down, tuple(newer))
    return chains
