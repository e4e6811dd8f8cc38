"""The event store's logic, written once as plans that the sync and async stores drive.

A plan is a generator that yields operations (:class:`Exec` a statement, :class:`Call`
a user function, :class:`RunSync` a metadata function) and receives their results; it
never touches a connection itself. :class:`~gennet_toolkit.event_sourcing.EventStore`
runs plans on a sync ``Connection``, :class:`AsyncEventStore` awaits the same steps on
an ``AsyncConnection``: one copy of the SQL, the locking and the hash chain.

Ordering. ``position`` is ``head + 1``, read and written inside one transaction that
first takes a lock every appender shares: ``pg_advisory_xact_lock`` on PostgreSQL
(released at commit, after the rows are visible), ``BEGIN IMMEDIATE`` on SQLite. So
positions are handed out in commit order and without gaps, and a reader that has
seen position ``p`` can never later find a committed ``p - 1``. The primary key on
``position`` backs this up: a writer that skipped the lock collides instead of forking
the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.event_sourcing._chain import (
    GENESIS,
    ChainAnchor,
    ChainChecker,
    VerifyReport,
    link,
)
from gennet_toolkit.event_sourcing._events import (
    ANY,
    MAX_NAME_LENGTH,
    EventDecodeError,
    InvalidEventError,
    NewEvent,
    RecordedEvent,
    Snapshot,
    WrongExpectedVersion,
    as_utc,
    check_json,
    check_name,
    check_version,
)
from gennet_toolkit.event_sourcing._registry import EventRegistry
from gennet_toolkit.event_sourcing._schema import Tables
from gennet_toolkit.exceptions import ConfigurationError

__all__: list[str] = []

T = TypeVar("T")

#: Largest page ``read_all`` / ``query`` return in one call.
MAX_LIMIT = 10_000


@dataclass(slots=True)
class Exec:
    """Execute ``stmt``; the result is the list of rows (``fetch``) or ``None``.

    ``key`` names the append statements a driver may run as its own SQL (``_fast``).
    """

    stmt: Any
    params: Any = None
    fetch: bool = True
    key: str | None = None


@dataclass(slots=True)
class Call:
    """Call a user function with one argument (awaited when it returns an awaitable)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(slots=True)
class RunSync:
    """Run ``fn(sync_connection)`` (DDL through ``MetaData``)."""

    fn: Callable[[Any], Any]


Op = Exec | Call | RunSync
Plan = Generator[Op, Any, T]


@dataclass(slots=True)
class _Payload:
    event: NewEvent
    data: Any
    data_text: str
    meta: dict[str, Any]
    meta_text: str


@dataclass(slots=True)
class AppendRequest:
    """One validated ``append`` call waiting for its transaction.

    The plan stages ``result`` or ``error``; the driver publishes them (``done``) only
    once the transaction has committed or failed, so no caller sees events that a
    rollback then takes away.
    """

    stream_id: str
    payloads: list[_Payload]
    expected_version: int | str
    staged: list[RecordedEvent] | None = None
    error: BaseException | None = None
    done: bool = False

    def fail(self, exc: BaseException) -> None:
        """The shared transaction failed: this request fails too (unless it already had)."""
        if self.error is None:
            self.error = exc
        self.staged = None

    def outcome(self) -> list[RecordedEvent]:
        """The recorded events, or raise this request's error."""
        if self.error is not None:
            raise self.error
        if self.staged is None:  # pragma: no cover - a published request has one or the other
            raise RuntimeError("append request was not processed")
        return self.staged


def _check_limit(limit: object, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidEventError(f"{name} must be an integer from 1 to {MAX_LIMIT}.")
    return limit


def _check_position(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEventError(f"{name} must be a non-negative integer.")
    return value


class Core:
    """What a store is besides its connections: tables, key, registry, plans."""

    def __init__(
        self,
        dialect: str,
        *,
        key: bytes | str,
        registry: EventRegistry | None,
        table_prefix: str,
    ) -> None:
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < 16:
            raise ConfigurationError("the event store key must be at least 16 bytes")
        if dialect not in {"sqlite", "postgresql"}:
            raise ConfigurationError(
                f"the event store supports SQLite and PostgreSQL, not {dialect}"
            )
        if not table_prefix.replace("_", "").isalnum():
            raise ConfigurationError("table_prefix may hold letters, digits and underscores only")
        self.key = raw
        self.registry = registry
        self.dialect = dialect
        self.sqlite = dialect == "sqlite"
        self.tables = Tables(table_prefix)
        e = self.tables.events
        # One lock id per table name: stores on different tables do not serialise each other.
        digest = hashlib.sha256(f"gennet.event_sourcing:{e.name}".encode()).digest()
        self.lock_id = int.from_bytes(digest[:8], "big", signed=True)
        self._lock = sa.text("SELECT pg_advisory_xact_lock(:k)").bindparams(k=self.lock_id)
        latest = (
            sa.select(sa.func.max(e.c.version))
            .where(e.c.stream_id == sa.bindparam("s"))
            .scalar_subquery()
        )
        self._head_and_version = (
            sa.select(e.c.position, e.c.hash, latest).order_by(e.c.position.desc()).limit(1)
        )
        self._stream_version = sa.select(latest)
        self._head = sa.select(e.c.position, e.c.hash).order_by(e.c.position.desc()).limit(1)
        self._versions = (
            sa.select(e.c.stream_id, sa.func.max(e.c.version))
            .where(e.c.stream_id.in_(sa.bindparam("streams", expanding=True)))
            .group_by(e.c.stream_id)
        )
        self._insert = e.insert()
        self._columns = [
            e.c.position,
            e.c.stream_id,
            e.c.version,
            e.c.type,
            e.c.schema_version,
            e.c.data,
            e.c.actor,
            e.c.meta,
            e.c.occurred_at,
            e.c.hash,
        ]

    # ------------------------------------------------------------------ rows

    @staticmethod
    def to_event(row: Any) -> RecordedEvent:
        """A stored row as a :class:`RecordedEvent`; malformed JSON is an EventDecodeError."""
        try:
            data = json.loads(row.data)
            meta = json.loads(row.meta)
        except (TypeError, ValueError):
            raise EventDecodeError(
                "stored JSON is malformed", position=row.position, event_type=row.type
            ) from None
        return RecordedEvent(
            position=int(row.position),
            stream_id=row.stream_id,
            version=int(row.version),
            type=row.type,
            data=data,
            actor=row.actor,
            metadata=meta,
            schema_version=int(row.schema_version),
            occurred_at=as_utc(row.occurred_at),
            hash=row.hash,
        )

    def _decode(self, event: RecordedEvent, decode: bool) -> Any:
        return self.registry.decode(event) if decode and self.registry is not None else event

    def _prepare(self, event: object, actor: str | None) -> NewEvent:
        if not isinstance(event, NewEvent):
            if self.registry is None:
                raise ConfigurationError(
                    "append typed events through a store with a registry, or pass NewEvent"
                )
            event = self.registry.encode(event, actor=actor)
        elif actor is not None and event.actor is None:
            event = NewEvent(
                event.type,
                event.data,
                actor,
                event.metadata,
                event.schema_version,
                event.occurred_at,
            )
        check_name(event.type, "event type")
        check_name(event.actor, "actor", optional=True)
        if check_version(event.schema_version, "schema_version") < 1:
            raise InvalidEventError("schema_version must be at least 1.")
        if not isinstance(event.occurred_at, datetime):
            raise InvalidEventError("occurred_at must be a datetime.")
        return event

    # ------------------------------------------------------------------ plans

    def prepare(
        self,
        stream_id: str,
        events: Iterable[object],
        expected_version: int | str,
        *,
        actor: str | None = None,
    ) -> AppendRequest:
        """Validate and serialise one ``append`` call (raises InvalidEventError at once)."""
        check_name(stream_id, "stream_id")
        if expected_version != ANY:
            check_version(expected_version, "expected_version")
        if isinstance(events, (NewEvent, str, bytes)) or not isinstance(events, Iterable):
            raise InvalidEventError("events must be a list of events.")
        prepared = [self._prepare(e, actor) for e in events]
        correlation_id = correlation_id_var.get()
        payloads = []
        for e in prepared:
            data_text = check_json(
                e.data if isinstance(e.data, dict) else dict(e.data), "event data"
            )
            meta = dict(e.metadata)
            if correlation_id is not None and "correlation_id" not in meta:
                meta["correlation_id"] = correlation_id
            meta_text = check_json(meta, "event metadata") if meta else "{}"
            # Hash what a reader will load, not the caller's objects (tuples, int keys).
            payloads.append(
                _Payload(e, json.loads(data_text), data_text, json.loads(meta_text), meta_text)
            )
        return AppendRequest(stream_id, payloads, expected_version)

    def append(self, requests: Sequence[AppendRequest], *, lock: bool = True) -> Plan[None]:
        """Check, chain and insert several appends in one transaction (group commit).

        Each request gets ``result`` or ``error`` (a stale ``expected_version`` fails
        only its own request, as if the requests had run one after another).
        """
        for request in requests:
            if not request.payloads:
                request.staged = []
        requests = [r for r in requests if r.payloads]
        if not requests:
            return
        if lock and not self.sqlite:
            yield Exec(self._lock, fetch=False, key="lock")
        streams = {r.stream_id for r in requests}
        if len(streams) == 1:
            rows = yield Exec(
                self._head_and_version, {"s": requests[0].stream_id}, key="head_version"
            )
            if rows:
                head, previous = int(rows[0][0]), str(rows[0][1])
                versions = {requests[0].stream_id: int(rows[0][2] or 0)}
            else:
                head, previous, versions = 0, GENESIS, {}
        else:
            rows = yield Exec(self._head, key="head")
            head, previous = (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)
            rows = yield Exec(self._versions, {"streams": sorted(streams)}, key="versions")
            versions = {str(r[0]): int(r[1]) for r in rows}
        params: list[dict[str, Any]] = []
        for request in requests:
            stream_id, current = request.stream_id, versions.get(request.stream_id, 0)
            expected = request.expected_version
            if expected not in (ANY, current):
                request.error = WrongExpectedVersion(stream_id, int(expected), current)
                continue
            records = []
            for i, p in enumerate(request.payloads, start=1):
                e = p.event
                occurred = as_utc(e.occurred_at)
                position, version = head + i, current + i
                digest = link(
                    self.key,
                    position=position,
                    stream_id=stream_id,
                    version=version,
                    type=e.type,
                    schema_version=e.schema_version,
                    data=p.data,
                    actor=e.actor,
                    metadata=p.meta,
                    occurred_at=occurred,
                    previous=previous,
                )
                previous = digest
                cid = p.meta.get("correlation_id")
                params.append(
                    {
                        "position": position,
                        "stream_id": stream_id,
                        "version": version,
                        "type": e.type,
                        "schema_version": e.schema_version,
                        "data": p.data_text,
                        "actor": e.actor,
                        "correlation_id": cid
                        if isinstance(cid, str) and len(cid) <= MAX_NAME_LENGTH
                        else None,
                        "meta": p.meta_text,
                        # SQLite keeps no offset: store UTC, read back as UTC.
                        "occurred_at": occurred.replace(tzinfo=None) if self.sqlite else occurred,
                        "hash": digest,
                    }
                )
                records.append(
                    RecordedEvent(
                        position,
                        stream_id,
                        version,
                        e.type,
                        p.data,
                        e.actor,
                        p.meta,
                        e.schema_version,
                        occurred,
                        digest,
                    )
                )
            head += len(records)
            versions[stream_id] = current + len(records)
            request.staged = records
        if params:
            yield Exec(
                self._insert, params[0] if len(params) == 1 else params, fetch=False, key="insert"
            )

    def _select(self) -> sa.Select[Any]:
        return sa.select(*self._columns)

    def read_stream(
        self, stream_id: str, from_version: int, to_version: int | None, limit: int | None
    ) -> Plan[list[RecordedEvent]]:
        """Events of one stream from ``from_version`` (inclusive) in version order."""
        check_name(stream_id, "stream_id")
        check_version(from_version, "from_version")
        e = self.tables.events
        stmt = self._select().where(e.c.stream_id == stream_id, e.c.version >= from_version)
        if to_version is not None:
            stmt = stmt.where(e.c.version <= check_version(to_version, "to_version"))
        if limit is not None:
            stmt = stmt.limit(_check_limit(limit))
        rows = yield Exec(stmt.order_by(e.c.version))
        return [self.to_event(r) for r in rows]

    def read_all(self, from_position: int, limit: int) -> Plan[list[RecordedEvent]]:
        """Up to ``limit`` events from ``from_position`` (inclusive) in position order."""
        _check_position(from_position, "from_position")
        e = self.tables.events
        stmt = (
            self._select()
            .where(e.c.position >= from_position)
            .order_by(e.c.position)
            .limit(_check_limit(limit))
        )
        rows = yield Exec(stmt)
        return [self.to_event(r) for r in rows]

    def query(
        self,
        *,
        type: str | Sequence[str] | None,
        actor: str | None,
        stream_id: str | None,
        correlation_id: str | None,
        since: datetime | None,
        until: datetime | None,
        after_position: int,
        limit: int,
    ) -> Plan[list[RecordedEvent]]:
        """Events matching every given filter, in position order, after ``after_position``."""
        e = self.tables.events
        stmt = self._select().where(
            e.c.position > _check_position(after_position, "after_position")
        )
        if type is not None:
            types = [type] if isinstance(type, str) else list(type)
            if not types or len(types) > 100:
                raise InvalidEventError("type must be a name or a list of 1 to 100 names.")
            for t in types:
                check_name(t, "type")
            stmt = (
                stmt.where(e.c.type.in_(types))
                if len(types) > 1
                else stmt.where(e.c.type == types[0])
            )
        if actor is not None:
            stmt = stmt.where(e.c.actor == check_name(actor, "actor"))
        if stream_id is not None:
            stmt = stmt.where(e.c.stream_id == check_name(stream_id, "stream_id"))
        if correlation_id is not None:
            stmt = stmt.where(e.c.correlation_id == check_name(correlation_id, "correlation_id"))
        for bound, op in ((since, "__ge__"), (until, "__lt__")):
            if bound is None:
                continue
            if not isinstance(bound, datetime):
                raise InvalidEventError("since and until must be datetimes.")
            value = as_utc(bound)
            stmt = stmt.where(
                getattr(e.c.occurred_at, op)(value.replace(tzinfo=None) if self.sqlite else value)
            )
        rows = yield Exec(stmt.order_by(e.c.position).limit(_check_limit(limit)))
        return [self.to_event(r) for r in rows]

    def replay(
        self,
        projection: Callable[[Any], Any],
        *,
        from_position: int,
        stream_id: str | None,
        batch_size: int,
        decode: bool,
    ) -> Plan[int]:
        """Feed events in order to ``projection``; return the last position fed (0: none)."""
        _check_limit(batch_size, "batch_size")
        last = max(_check_position(from_position, "from_position"), 1) - 1
        if stream_id is not None:
            check_name(stream_id, "stream_id")
        e = self.tables.events
        while True:
            stmt = self._select().where(e.c.position > last)
            if stream_id is not None:
                stmt = stmt.where(e.c.stream_id == stream_id)
            rows = yield Exec(stmt.order_by(e.c.position).limit(batch_size))
            for row in rows:
                event = self.to_event(row)
                yield Call(projection, (self._decode(event, decode),))
                last = event.position
            if len(rows) < batch_size:
                return last

    def rebuild(
        self,
        stream_id: str,
        apply: Callable[[Any, Any], Any],
        initial: Any,
        *,
        use_snapshot: bool,
        decode: bool,
        batch_size: int = 1000,
    ) -> Plan[tuple[Any, int]]:
        """Fold ``apply(state, event)`` over the stream, from its snapshot when there is one."""
        state, version = initial, 0
        if use_snapshot:
            snap = yield from self.load_snapshot(stream_id)
            if snap is not None:
                state, version = snap.state, snap.version
        e = self.tables.events
        while True:
            stmt = self._select().where(e.c.stream_id == stream_id, e.c.version > version)
            rows = yield Exec(stmt.order_by(e.c.version).limit(batch_size))
            for row in rows:
                event = self.to_event(row)
                state = yield Call(apply, (state, self._decode(event, decode)))
                version = event.version
            if len(rows) < batch_size:
                return state, version

    def save_snapshot(self, stream_id: str, version: int, state: Any) -> Plan[Snapshot]:
        """Replace the stream's snapshot with ``state`` as of ``version``."""
        check_name(stream_id, "stream_id")
        if check_version(version, "version") < 1:
            raise InvalidEventError("version must be at least 1.")
        state_text = check_json(state, "snapshot state")
        rows = yield Exec(self._stream_version, {"s": stream_id})
        current = int(rows[0][0] or 0) if rows else 0
        if version > current:
            raise InvalidEventError("a snapshot cannot be ahead of its stream.")
        s = self.tables.snapshots
        now = datetime.now(UTC)
        yield Exec(s.delete().where(s.c.stream_id == stream_id), fetch=False)
        yield Exec(
            s.insert(),
            {
                "stream_id": stream_id,
                "version": version,
                "state": state_text,
                "created_at": now.replace(tzinfo=None) if self.sqlite else now,
            },
            fetch=False,
        )
        return Snapshot(stream_id, version, json.loads(state_text), now)

    def load_snapshot(self, stream_id: str) -> Plan[Snapshot | None]:
        """The stream's snapshot, or ``None``."""
        check_name(stream_id, "stream_id")
        s = self.tables.snapshots
        rows = yield Exec(
            sa.select(s.c.version, s.c.state, s.c.created_at).where(s.c.stream_id == stream_id)
        )
        if not rows:
            return None
        version, state, created = rows[0]
        return Snapshot(stream_id, int(version), json.loads(state), as_utc(created))

    def head(self) -> Plan[ChainAnchor | None]:
        """The last record's ``(position, hash)``."""
        rows = yield Exec(self._head)
        return ChainAnchor(int(rows[0][0]), str(rows[0][1])) if rows else None

    def stream_version(self, stream_id: str) -> Plan[int]:
        """The stream's current version (0: no events)."""
        check_name(stream_id, "stream_id")
        rows = yield Exec(self._stream_version, {"s": stream_id})
        return int(rows[0][0] or 0) if rows else 0

    def verify(self, anchor: ChainAnchor | None, batch_size: int) -> Plan[VerifyReport]:
        """Recompute the chain from position 1; report the first break."""
        _check_limit(batch_size, "batch_size")
        if anchor is not None and not isinstance(anchor, ChainAnchor):
            raise InvalidEventError("anchor must be a ChainAnchor.")
        checker = ChainChecker(self.key, anchor=anchor)
        e = self.tables.events
        last = 0
        while True:
            stmt = (
                self._select().where(e.c.position > last).order_by(e.c.position).limit(batch_size)
            )
            rows = yield Exec(stmt)
            for row in rows:
                try:
                    event = self.to_event(row)
                except EventDecodeError:
                    checker.checked += 1
                    checker.broken, checker.reason = int(row.position), "hash mismatch"
                    return checker.report()
                if not checker.feed(event):
                    return checker.report()
                last = event.position
            if len(rows) < batch_size:
                return checker.report()

    def ping(self) -> Plan[None]:
        """One round trip."""
        yield Exec(sa.text("SELECT 1"))

    def create_tables(self) -> Plan[None]:
        """CREATE TABLE IF NOT EXISTS for both tables and their indexes."""
        yield RunSync(self.tables.metadata.create_all)

    def drop_tables(self) -> Plan[None]:
        """DROP both tables."""
        yield RunSync(self.tables.metadata.drop_all)
