"""``EventStore`` (sync ``Engine``) and ``AsyncEventStore`` (``AsyncEngine``).

Both are thin drivers of the plans in ``_core``: they open the connection and the
transaction, run each yielded step, and translate driver errors (refused connection,
constraint violation) into the toolkit's errors.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gennet_toolkit.event_sourcing._chain import ChainAnchor, VerifyReport
from gennet_toolkit.event_sourcing._core import AppendRequest, Call, Core, Exec, Plan, RunSync
from gennet_toolkit.event_sourcing._events import RecordedEvent, Snapshot
from gennet_toolkit.event_sourcing._fast import DriverAppend
from gennet_toolkit.event_sourcing._group import AsyncGroup, SyncGroup, fail_batch
from gennet_toolkit.event_sourcing._registry import EventRegistry
from gennet_toolkit.exceptions import ConcurrencyError, ConfigurationError, ServiceUnavailable

__all__ = ["AsyncEventStore", "EventStore"]

logger = logging.getLogger("gennet_toolkit.event_sourcing")

T = TypeVar("T")
E = TypeVar("E", sa.Engine, AsyncEngine)

_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, OSError)


def _translate(exc: BaseException) -> BaseException | None:
    if isinstance(exc, sa_exc.IntegrityError):
        # Under the store's lock only a writer bypassing it can collide; either way
        # someone else wrote this (stream, version) or position first.
        return ConcurrencyError()
    if isinstance(exc, _UNAVAILABLE) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return ServiceUnavailable("The event store is unavailable.")
    return None


class _Base(Generic[E]):
    """Options shared by both stores (the engine type is the only difference)."""

    def __init__(
        self,
        engine: E,
        *,
        key: bytes | str,
        registry: EventRegistry | None = None,
        table_prefix: str = "gennet_",
    ) -> None:
        self.engine: E = engine
        self._core = Core(
            engine.dialect.name, key=key, registry=registry, table_prefix=table_prefix
        )

    @property
    def registry(self) -> EventRegistry | None:
        """The registry used to encode typed events and decode stored ones."""
        return self._core.registry

    @property
    def events_table(self) -> sa.Table:
        """The events table (for reporting queries and migrations)."""
        return self._core.tables.events

    @property
    def metadata(self) -> sa.MetaData:
        """The store's private ``MetaData`` (add it to Alembic's target metadata)."""
        return self._core.tables.metadata

    @classmethod
    def _env(cls, prefix: str) -> dict[str, Any]:
        env = os.environ
        p = prefix + "EVENT_STORE_"
        kw: dict[str, Any] = {}
        if (key := env.get(p + "KEY")) is not None:
            kw["key"] = key
        if (table_prefix := env.get(p + "TABLE_PREFIX")) is not None:
            kw["table_prefix"] = table_prefix
        return kw


class EventStore(_Base[sa.Engine]):
    """An append-only, hash-chained event store on a sync SQLAlchemy ``Engine``.

    ::

        store = EventStore(create_engine("sqlite:///events.db"), key=secret)
        store.create_tables()
        store.append("network-1", [NewEvent("GeneAdded", {"symbol": "lacZ"})], expected_version=0)

    ``key`` (16+ bytes) signs the HMAC chain; keep it outside the database.
    ``registry`` lets ``append`` take registered dataclasses/pydantic models and
    ``replay``/``rebuild`` hand them back decoded.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        key: bytes | str,
        registry: EventRegistry | None = None,
        table_prefix: str = "gennet_",
    ) -> None:
        super().__init__(engine, key=key, registry=registry, table_prefix=table_prefix)
        self._group = SyncGroup()
        self._driver = DriverAppend(self._core, engine)

    @classmethod
    def from_env(
        cls, prefix: str = "GENNET_", *, engine: sa.Engine | None = None, **overrides: Any
    ) -> EventStore:
        """Build from ``{prefix}EVENT_STORE_URL`` (when no engine), ``_KEY``, ``_TABLE_PREFIX``."""
        kw = cls._env(prefix)
        kw.update(overrides)
        if engine is None:
            url = os.environ.get(prefix + "EVENT_STORE_URL")
            if not url:
                raise ConfigurationError(f"{prefix}EVENT_STORE_URL is not set")
            engine = sa.create_engine(url)
        if "key" not in kw:
            raise ConfigurationError(f"{prefix}EVENT_STORE_KEY is not set")
        return cls(engine, **kw)

    # ------------------------------------------------------------------ driving

    def _drive(self, conn: sa.Connection, plan: Plan[T]) -> T:
        result: Any = None
        while True:
            try:
                op = plan.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(op, Exec):
                res = (
                    conn.execute(op.stmt, op.params)
                    if op.params is not None
                    else conn.execute(op.stmt)
                )
                result = res.all() if op.fetch else None
            elif isinstance(op, Call):
                result = op.fn(*op.args)
            elif isinstance(op, RunSync):
                result = op.fn(conn)

    def _run(self, plan: Plan[T], *, write: bool, connection: sa.Connection | None = None) -> T:
        try:
            if connection is not None:
                return self._drive(connection, plan)
            with self.engine.connect() as conn:
                if write and self._core.sqlite:
                    # Take SQLite's write lock before reading the head: positions
                    # and the chain link are computed under it.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                out = self._drive(conn, plan)
                conn.commit()
                return out
        except sa_exc.SQLAlchemyError as exc:
            mapped = _translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        except OSError as exc:
            raise ServiceUnavailable("The event store is unavailable.") from exc

    # ------------------------------------------------------------------ API

    def create_tables(self) -> None:
        """Create the events and snapshots tables if they do not exist."""
        self._run(self._core.create_tables(), write=False)

    def drop_tables(self) -> None:
        """Drop both tables (tests, teardown)."""
        self._run(self._core.drop_tables(), write=False)

    def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless the database answers."""
        self._run(self._core.ping(), write=False)

    def append(
        self,
        stream_id: str,
        events: Iterable[object],
        expected_version: int | str,
        *,
        actor: str | None = None,
        connection: sa.Connection | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to ``stream_id`` if it is at ``expected_version``.

        ``expected_version`` is the stream's current version (0 for a new stream) or
        :data:`ANY`. A mismatch raises :class:`WrongExpectedVersion` (a
        ``ConcurrencyError``). Events are :class:`NewEvent` or registered objects;
        ``actor`` fills in events that have none. With ``connection`` the append joins
        the caller's transaction (and holds the append lock until it commits).

        Appends from several threads at once are committed together (group commit):
        one transaction and one disk flush for all of them, each still checked against
        its own ``expected_version``.
        """
        request = self._core.prepare(stream_id, events, expected_version, actor=actor)
        if connection is not None:
            self._run(self._core.append([request]), write=True, connection=connection)
            return request.outcome()
        group = self._group
        with group.cond:
            group.pending.append(request)
            while group.busy and not request.done:
                group.cond.wait()
            if request.done:
                return request.outcome()
            group.busy = True
            batch, group.pending = group.pending, []
        try:
            self._commit(batch)
        except BaseException as exc:
            fail_batch(batch, request, exc)
        finally:
            with group.cond:
                for r in batch:
                    r.done = True
                group.busy = False
                group.cond.notify_all()
        return request.outcome()

    def _commit(self, batch: list[AppendRequest]) -> None:
        # The driver path when the engine allows it (same plan, less overhead).
        if not (self._driver.usable() and self._driver.run(self._core.append(batch))):
            self._run(self._core.append(batch), write=True)

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        *,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """The events of ``stream_id`` from ``from_version`` (inclusive), in version order."""
        return self._run(
            self._core.read_stream(stream_id, from_version, to_version, limit), write=False
        )

    def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events from ``from_position`` (inclusive), in global order.

        Positions are gap-free and assigned in commit order, so following the log with
        ``read_all(last.position + 1)`` never skips an event.
        """
        return self._run(self._core.read_all(from_position, limit), write=False)

    def query(
        self,
        *,
        type: str | Sequence[str] | None = None,
        actor: str | None = None,
        stream_id: str | None = None,
        correlation_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int = 0,
        limit: int = 100,
    ) -> list[RecordedEvent]:
        """Events matching every filter given (``since`` inclusive, ``until`` exclusive).

        Page with ``after_position=<last position seen>``.
        """
        return self._run(
            self._core.query(
                type=type,
                actor=actor,
                stream_id=stream_id,
                correlation_id=correlation_id,
                since=since,
                until=until,
                after_position=after_position,
                limit=limit,
            ),
            write=False,
        )

    def replay(
        self,
        projection: Callable[[Any], Any],
        *,
        from_position: int = 1,
        stream_id: str | None = None,
        batch_size: int = 500,
        decode: bool = True,
    ) -> int:
        """Call ``projection(event)`` for each event in order; return the last position.

        Events are decoded through the registry (``decode=False``: raw records).
        """
        plan = self._core.replay(
            projection,
            from_position=from_position,
            stream_id=stream_id,
            batch_size=batch_size,
            decode=decode,
        )
        return self._run(plan, write=False)

    def rebuild(
        self,
        stream_id: str,
        apply: Callable[[Any, Any], Any],
        initial: Any = None,
        *,
        use_snapshot: bool = True,
        decode: bool = True,
    ) -> tuple[Any, int]:
        """Fold ``state = apply(state, event)`` over a stream; return ``(state, version)``.

        Starts from the stream's snapshot when there is one (and ``use_snapshot``).
        """
        return self._run(
            self._core.rebuild(stream_id, apply, initial, use_snapshot=use_snapshot, decode=decode),
            write=False,
        )

    def save_snapshot(self, stream_id: str, version: int, state: Any) -> Snapshot:
        """Store ``state`` (JSON) as the stream's snapshot at ``version``, replacing the old one."""
        return self._run(self._core.save_snapshot(stream_id, version, state), write=True)

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's snapshot, or ``None``."""
        return self._run(self._core.load_snapshot(stream_id), write=False)

    def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        return self._run(self._core.stream_version(stream_id), write=False)

    def head(self) -> ChainAnchor | None:
        """The chain head ``(position, hash)``: store it elsewhere to anchor the chain."""
        return self._run(self._core.head(), write=False)

    def verify(self, anchor: ChainAnchor | None = None, *, batch_size: int = 1000) -> VerifyReport:
        """Recompute the HMAC chain from position 1 and report the first broken position.

        With ``anchor`` (an earlier :meth:`head`), also report a log that was truncated
        or rolled back past it.
        """
        return self._run(self._core.verify(anchor, batch_size), write=False)


class AsyncEventStore(_Base[AsyncEngine]):
    """The same store on an ``AsyncEngine`` (asyncpg, aiosqlite): every method awaits.

    Projections and ``apply`` functions given to :meth:`replay`/:meth:`rebuild` may be
    sync or async.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        key: bytes | str,
        registry: EventRegistry | None = None,
        table_prefix: str = "gennet_",
    ) -> None:
        super().__init__(engine, key=key, registry=registry, table_prefix=table_prefix)
        self._group = AsyncGroup(None)

    @classmethod
    def from_env(
        cls, prefix: str = "GENNET_", *, engine: AsyncEngine | None = None, **overrides: Any
    ) -> AsyncEventStore:
        """Build from ``{prefix}EVENT_STORE_URL`` (when no engine), ``_KEY``, ``_TABLE_PREFIX``."""
        kw = cls._env(prefix)
        kw.update(overrides)
        if engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            url = os.environ.get(prefix + "EVENT_STORE_URL")
            if not url:
                raise ConfigurationError(f"{prefix}EVENT_STORE_URL is not set")
            engine = create_async_engine(url)
        if "key" not in kw:
            raise ConfigurationError(f"{prefix}EVENT_STORE_KEY is not set")
        return cls(engine, **kw)

    async def _drive(self, conn: AsyncConnection, plan: Plan[T]) -> T:
        result: Any = None
        while True:
            try:
                op = plan.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(op, Exec):
                res = await (
                    conn.execute(op.stmt, op.params)
                    if op.params is not None
                    else conn.execute(op.stmt)
                )
                result = res.all() if op.fetch else None
            elif isinstance(op, Call):
                result = op.fn(*op.args)
                if inspect.isawaitable(result):
                    result = await result
            elif isinstance(op, RunSync):
                result = await conn.run_sync(op.fn)

    async def _run(
        self, plan: Plan[T], *, write: bool, connection: AsyncConnection | None = None
    ) -> T:
        try:
            if connection is not None:
                return await self._drive(connection, plan)
            async with self.engine.connect() as conn:
                if write and self._core.sqlite:
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                out = await self._drive(conn, plan)
                await conn.commit()
                return out
        except sa_exc.SQLAlchemyError as exc:
            mapped = _translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        except OSError as exc:
            raise ServiceUnavailable("The event store is unavailable.") from exc

    async def create_tables(self) -> None:
        """Create the events and snapshots tables if they do not exist."""
        await self._run(self._core.create_tables(), write=False)

    async def drop_tables(self) -> None:
        """Drop both tables (tests, teardown)."""
        await self._run(self._core.drop_tables(), write=False)

    async def ping(self) -> None:
        """Raise :class:`ServiceUnavailable` unless the database answers."""
        await self._run(self._core.ping(), write=False)

    async def append(
        self,
        stream_id: str,
        events: Iterable[object],
        expected_version: int | str,
        *,
        actor: str | None = None,
        connection: AsyncConnection | None = None,
    ) -> list[RecordedEvent]:
        """See :meth:`EventStore.append` (concurrent tasks share transactions too)."""
        request = self._core.prepare(stream_id, events, expected_version, actor=actor)
        if connection is not None:
            await self._run(self._core.append([request]), write=True, connection=connection)
            return request.outcome()
        loop = asyncio.get_running_loop()
        group = self._group
        if group.loop is not loop and not group.busy:
            group = self._group = AsyncGroup(loop)
        async with group.cond:
            group.pending.append(request)
            while group.busy and not request.done:
                await group.cond.wait()
            if request.done:
                return request.outcome()
            group.busy = True
            batch, group.pending = group.pending, []
        try:
            await self._run(self._core.append(batch), write=True)
        except BaseException as exc:
            fail_batch(batch, request, exc)
        finally:
            async with group.cond:
                for r in batch:
                    r.done = True
                group.busy = False
                group.cond.notify_all()
        return request.outcome()

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        *,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """See :meth:`EventStore.read_stream`."""
        return await self._run(
            self._core.read_stream(stream_id, from_version, to_version, limit), write=False
        )

    async def read_all(self, from_position: int = 1, limit: int = 1000) -> list[RecordedEvent]:
        """See :meth:`EventStore.read_all`."""
        return await self._run(self._core.read_all(from_position, limit), write=False)

    async def query(
        self,
        *,
        type: str | Sequence[str] | None = None,
        actor: str | None = None,
        stream_id: str | None = None,
        correlation_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int = 0,
        limit: int = 100,
    ) -> list[RecordedEvent]:
        """See :meth:`EventStore.query`."""
        return await self._run(
            self._core.query(
                type=type,
                actor=actor,
                stream_id=stream_id,
                correlation_id=correlation_id,
                since=since,
                until=until,
                after_position=after_position,
                limit=limit,
            ),
            write=False,
        )

    async def replay(
        self,
        projection: Callable[[Any], Any],
        *,
        from_position: int = 1,
        stream_id: str | None = None,
        batch_size: int = 500,
        decode: bool = True,
    ) -> int:
        """See :meth:`EventStore.replay`."""
        plan = self._core.replay(
            projection,
            from_position=from_position,
            stream_id=stream_id,
            batch_size=batch_size,
            decode=decode,
        )
        return await self._run(plan, write=False)

    async def rebuild(
        self,
        stream_id: str,
        apply: Callable[[Any, Any], Any],
        initial: Any = None,
        *,
        use_snapshot: bool = True,
        decode: bool = True,
    ) -> tuple[Any, int]:
        """See :meth:`EventStore.rebuild`."""
        return await self._run(
            self._core.rebuild(stream_id, apply, initial, use_snapshot=use_snapshot, decode=decode),
            write=False,
        )

    async def save_snapshot(self, stream_id: str, version: int, state: Any) -> Snapshot:
        """See :meth:`EventStore.save_snapshot`."""
        return await self._run(self._core.save_snapshot(stream_id, version, state), write=True)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """See :meth:`EventStore.load_snapshot`."""
        return await self._run(self._core.load_snapshot(stream_id), write=False)

    async def stream_version(self, stream_id: str) -> int:
        """See :meth:`EventStore.stream_version`."""
        return await self._run(self._core.stream_version(stream_id), write=False)

    async def head(self) -> ChainAnchor | None:
        """See :meth:`EventStore.head`."""
        return await self._run(self._core.head(), write=False)

    async def verify(
        self, anchor: ChainAnchor | None = None, *, batch_size: int = 1000
    ) -> VerifyReport:
        """See :meth:`EventStore.verify`."""
        return await self._run(self._core.verify(anchor, batch_size), write=False)
