"""Event values, the errors of the event store, and the JSON rules they follow."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gennet_toolkit.exceptions import BadRequest, ConcurrencyError, GenNetError

__all__ = [
    "ANY",
    "MAX_NAME_LENGTH",
    "EventDecodeError",
    "InvalidEventError",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "UnknownEventType",
    "WrongExpectedVersion",
]

#: ``expected_version=ANY`` appends whatever the stream's current version is (audit logs).
ANY: Final = "any"

#: Longest stream id, event type or actor accepted (they are indexed columns).
MAX_NAME_LENGTH: Final = 200


class InvalidEventError(BadRequest, ValueError):
    """An event or an argument to the store is malformed (400; also a ``ValueError``)."""

    code = "invalid_event"
    default_detail = "The event is malformed."


class WrongExpectedVersion(ConcurrencyError):
    """The stream is not at ``expected_version``: another writer appended first (409).

    ``stream_id``, ``expected_version`` and ``actual_version`` are attributes for the
    caller; they are not put in the problem body (stream ids can come from clients).
    """

    def __init__(self, stream_id: str, expected_version: int, actual_version: int) -> None:
        super().__init__()
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version

    def __repr__(self) -> str:
        return (
            f"WrongExpectedVersion(stream_id={self.stream_id!r}, "
            f"expected_version={self.expected_version}, actual_version={self.actual_version})"
        )


class EventDecodeError(GenNetError):
    """A stored event cannot be turned into its registered class (500: a server-side bug).

    ``position`` and ``event_type`` say which record; ``reason`` says why.
    """

    code = "event_decode_error"
    default_detail = "A stored event could not be decoded."

    def __init__(self, reason: str, *, position: int | None, event_type: str) -> None:
        super().__init__()
        self.reason = reason
        self.position = position
        self.event_type = event_type

    def __str__(self) -> str:
        return f"event {self.event_type!r} at position {self.position}: {self.reason}"


class UnknownEventType(EventDecodeError, LookupError):
    """A stored event's type is not in the registry and the registry is strict."""

    code = "unknown_event_type"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: ``type``, JSON ``data``, the ``actor`` who caused it, and metadata.

    ``schema_version`` is the version of ``data``'s shape (upcasters lift old ones);
    ``occurred_at`` defaults to now (UTC). The store adds the correlation id of the
    current request to ``metadata`` unless it is already there.
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    actor: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    occurred_at: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: a global ``position``, its ``stream_id`` and ``version`` in it.

    ``hash`` is the hex HMAC-SHA256 chaining this record to the one before it.
    ``correlation_id`` is ``metadata["correlation_id"]`` when present.
    """

    position: int
    stream_id: str
    version: int
    type: str
    data: dict[str, Any]
    actor: str | None
    metadata: dict[str, Any]
    schema_version: int
    occurred_at: datetime
    hash: str

    @property
    def correlation_id(self) -> str | None:
        """The correlation id of the request that appended this event, if recorded."""
        value = self.metadata.get("correlation_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The folded ``state`` of a stream up to and including ``version``."""

    stream_id: str
    version: int
    state: Any
    created_at: datetime


# ---------------------------------------------------------------------- JSON rules


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def check_json(value: Any, what: str) -> str:
    """Serialise ``value`` or raise :class:`InvalidEventError` naming ``what`` (not the value)."""
    try:
        text = dumps(value)
        # A lone surrogate (``"\ud800"`` in a JSON body) serialises but no driver can
        # store it: refuse it here as bad input rather than fail the write with a 500.
        text.encode("utf-8")
        return text
    except (TypeError, ValueError):
        raise InvalidEventError(
            f"{what} must be JSON (objects, arrays, strings, finite numbers, booleans, null)."
        ) from None


def check_name(value: object, what: str, *, optional: bool = False) -> str | None:
    """A non-empty string up to :data:`MAX_NAME_LENGTH` characters, without NUL or lone
    surrogates (drivers refuse both: they would be a 500, not a 400)."""
    if value is None and optional:
        return None
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_NAME_LENGTH
        or "\x00" in value
        or not _encodable(value)
    ):
        raise InvalidEventError(
            f"{what} must be a non-empty string of at most {MAX_NAME_LENGTH} characters."
        )
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_version(value: object, what: str) -> int:
    """A non-negative ``int`` (``bool`` is refused: ``True`` is not a version)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEventError(f"{what} must be a non-negative integer.")
    return value


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes (SQLite hands those back) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """The canonical timestamp text: UTC, microseconds, ``+00:00``."""
    return as_utc(value).isoformat(timespec="microseconds")


def finite(value: float) -> bool:
    """Whether a float is finite (JSON has no NaN)."""
    return math.isfinite(value)
