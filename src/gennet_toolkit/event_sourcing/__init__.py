"""An append-only, hash-chained event store on SQLAlchemy 2, and an audit trail on top.

- :class:`EventStore` (sync ``Engine``) and :class:`AsyncEventStore` (``AsyncEngine``)
  share one implementation: ``append(stream_id, events, expected_version)`` with
  optimistic concurrency (:class:`WrongExpectedVersion`, a ``ConcurrencyError``),
  ``read_stream``, ``read_all`` (gap-free global positions in commit order),
  ``query``, ``replay``, ``rebuild`` with snapshots, ``head`` and ``verify``;
- every record is chained by HMAC-SHA256 over a canonical encoding; ``verify()``
  reports the first broken position and, given an anchor kept elsewhere, truncation;
- :class:`EventRegistry` decodes stored events to registered dataclasses or pydantic
  models (never importing anything named by stored data) and upcasts old versions;
- :class:`AuditTrailMiddleware` records who did what on mutating HTTP requests, and
  :func:`record` / :class:`AuditBatch` do the same from service code.
"""

from __future__ import annotations

from gennet_toolkit._optional import require

# Everything here is built on SQLAlchemy: without it, fail at import with the install hint.
require("sqlalchemy", extra="sql", feature="gennet_toolkit.event_sourcing")

from gennet_toolkit.event_sourcing._audit import (  # noqa: E402
    AuditBatch,
    AuditTrailMiddleware,
    arecord,
    audit_event,
    record,
)
from gennet_toolkit.event_sourcing._chain import ChainAnchor, VerifyReport  # noqa: E402
from gennet_toolkit.event_sourcing._events import (  # noqa: E402
    ANY,
    EventDecodeError,
    InvalidEventError,
    NewEvent,
    RecordedEvent,
    Snapshot,
    UnknownEventType,
    WrongExpectedVersion,
)
from gennet_toolkit.event_sourcing._registry import EventRegistry, Upcaster  # noqa: E402
from gennet_toolkit.event_sourcing._store import AsyncEventStore, EventStore  # noqa: E402

__all__ = [
    "EventStore",
    "AsyncEventStore",
    "ANY",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
    "EventRegistry",
    "Upcaster",
    "ChainAnchor",
    "VerifyReport",
    "AuditTrailMiddleware",
    "AuditBatch",
    "audit_event",
    "record",
    "arecord",
    "InvalidEventError",
    "WrongExpectedVersion",
    "EventDecodeError",
    "UnknownEventType",
]
