"""``BatchProcessor``: runs the shared plans on a sync or an async session factory."""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import async_sessionmaker

from gennet_toolkit.batch_operations import _idempotency as idem
from gennet_toolkit.batch_operations._ops import (
    Authorize,
    Execute,
    Op,
    Release,
    RollbackTo,
    Savepoint,
)
from gennet_toolkit.batch_operations._plan import create_plan, delete_plan, upsert_plan
from gennet_toolkit.batch_operations._result import BatchResult
from gennet_toolkit.batch_operations._schema import TableInfo
from gennet_toolkit.exceptions import (
    BadRequest,
    ConfigurationError,
    InvalidJSON,
    PayloadTooLarge,
    ServiceUnavailable,
)

__all__ = ["BatchProcessor"]

T = TypeVar("T")
BeforeCommit = Callable[[Any, BatchResult], Any]
_PlanFactory = Callable[[str], Generator[Op, Any, T]]

# Errors that mean "the database is not reachable right now", not "bad item".
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer") from None


class BatchProcessor:
    """Batch create, upsert and delete for one table, all-or-nothing or item by item.

    ``BatchProcessor(session_factory, model, *, max_items=1000, max_bytes=1 MiB,
    chunk_size=1000, fields=None, conflict=None, authorize=None, before_commit=None,
    return_keys=False, idempotency_ttl=86400, idempotency_table=…)``.

    ``session_factory`` is a ``sessionmaker`` (use :meth:`create_many`, …) or an
    ``async_sessionmaker`` (use :meth:`acreate_many`, …); ``model`` an ORM class or a
    ``Table`` with a primary key. ``fields`` limits the columns clients may set
    (mass-assignment guard); ``authorize(item) -> bool`` is checked per item;
    ``before_commit(session, result)`` runs inside the transaction (e.g. to write one
    audit record per item); ``return_keys`` makes atomic creates learn
    server-generated primary keys with ``RETURNING``.
    """

    def __init__(
        self,
        session_factory: Any,
        model: Any,
        *,
        max_items: int = 1000,
        max_bytes: int = 1_048_576,
        chunk_size: int = 1000,
        fields: Collection[str] | None = None,
        conflict: Sequence[str] | None = None,
        authorize: Authorize | None = None,
        before_commit: BeforeCommit | None = None,
        return_keys: bool = False,
        idempotency_ttl: float = 86_400.0,
        idempotency_table: str = "gennet_batch_idempotency",
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ConfigurationError("max_items and max_bytes must be positive")
        if idempotency_ttl <= 0:
            raise ConfigurationError("idempotency_ttl must be positive")
        self._factory = session_factory
        self._is_async = isinstance(session_factory, async_sessionmaker)
        self._info = TableInfo(model, fields=fields)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.chunk_size = self._check_chunk(chunk_size)
        self._conflict = self._conflict_key(conflict)
        self._authorize = authorize
        self._before_commit = before_commit
        self._return_keys = return_keys
        self._ttl = idempotency_ttl
        self._idem_table = idem.make_table(idempotency_table)
        self._idem_ready = False

    @classmethod
    def from_env(
        cls, session_factory: Any, model: Any, *, prefix: str = "GENNET_", **overrides: Any
    ) -> BatchProcessor:
        """Build from ``{prefix}BATCH_MAX_ITEMS``, ``…_MAX_BYTES``, ``…_CHUNK_SIZE`` and
        ``…_IDEMPOTENCY_TTL``; keyword arguments win over the environment."""
        kw: dict[str, Any] = {}
        for option in ("max_items", "max_bytes", "chunk_size", "idempotency_ttl"):
            value = _env_int(f"{prefix}BATCH_{option.upper()}")
            if value is not None:
                kw[option] = value
        kw.update(overrides)
        return cls(session_factory, model, **kw)

    # ------------------------------------------------------------------ configuration

    def _check_chunk(self, chunk_size: Any) -> int:
        if chunk_size is None:
            return self.chunk_size
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ConfigurationError("chunk_size must be a positive integer")
        # Keep a chunk's bind parameters under SQLite's limit (32,766) and asyncpg's.
        cap = max(1, 30_000 // max(1, len(self._info.columns)))
        return min(chunk_size, cap)

    def _conflict_key(self, conflict: Sequence[str] | None) -> tuple[str, ...]:
        info = self._info
        if conflict is None:
            return info.pk
        key = info.resolve(list(conflict), "conflict")
        if not any(set(key) == set(u) for u in info.unique_keys):
            raise ConfigurationError("conflict must name the primary key or a unique key")
        if not info.exact(key):
            raise ConfigurationError(
                "conflict columns must be integer, string or UUID columns (matched exactly)"
            )
        return key

    def _check_count(self, items: Sequence[Any]) -> None:
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
            raise BadRequest("The batch must be a list of items.", code="invalid_batch")
        if len(items) > self.max_items:
            raise PayloadTooLarge(
                f"A batch may hold at most {self.max_items} items.",
                code="too_many_items",
                extra={"max_items": self.max_items},
            )

    # ------------------------------------------------------------------ request bodies

    def _too_many_bytes(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"A batch body may hold at most {self.max_bytes} bytes.",
            extra={"max_bytes": self.max_bytes},
        )

    def parse_items(self, body: bytes, *, member: str = "items") -> list[Any]:
        """Decode a JSON batch body: a list, or an object whose ``member`` is the list.

        Over ``max_bytes`` → 413; not JSON → 400 ``invalid_json``; not a list → 400;
        over ``max_items`` → 413. Nothing from the body is echoed in the errors.
        """
        if len(body) > self.max_bytes:
            raise self._too_many_bytes()
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidJSON() from None
        if isinstance(data, dict):
            data = data.get(member)
        if not isinstance(data, list):
            raise BadRequest(
                f"The body must be a JSON list or an object with a {member!r} list.",
                code="invalid_batch",
            )
        self._check_count(data)
        return data

    async def read_items(self, request: Any, *, member: str = "items") -> list[Any]:
        """Read a Starlette-style request's body (``.headers``, ``.stream()``) with the
        byte cap enforced while streaming, then :meth:`parse_items` it."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_many_bytes()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_many_bytes()
            chunks.append(chunk)
        return self.parse_items(b"".join(chunks), member=member)

    # ------------------------------------------------------------------ plan factories

    def _create(self, items: Sequence[Any], atomic: bool, chunk_size: int | None) -> Any:
        self._check_count(items)
        size = self._check_chunk(chunk_size)
        return lambda dialect: create_plan(
            self._info,
            items,
            atomic=atomic,
            dialect=dialect,
            chunk_size=size,
            authorize=self._authorize,
            return_keys=self._return_keys,
        )

    def _upsert(
        self,
        items: Sequence[Any],
        conflict: Sequence[str] | None,
        update: Sequence[str] | None,
        atomic: bool,
        chunk_size: int | None,
    ) -> Any:
        self._check_count(items)
        size = self._check_chunk(chunk_size)
        key = self._conflict if conflict is None else self._conflict_key(conflict)
        cols = None if update is None else self._info.resolve(list(update), "update")
        return lambda dialect: upsert_plan(
            self._info,
            items,
            conflict=key,
            update=cols,
            atomic=atomic,
            dialect=dialect,
            chunk_size=size,
            authorize=self._authorize,
        )

    def _delete(self, ids: Sequence[Any], atomic: bool, chunk_size: int | None, where: Any) -> Any:
        self._check_count(ids)
        size = self._check_chunk(chunk_size)
        if not self._info.exact(self._info.pk):
            raise ConfigurationError("delete_many needs an integer, string or UUID primary key")
        return lambda dialect: delete_plan(
            self._info, ids, atomic=atomic, dialect=dialect, chunk_size=size, where=where
        )

    def _with_key(
        self,
        factory: _PlanFactory[BatchResult],
        key: str | None,
        operation: str,
        options: Mapping[str, Any],
        payload: Sequence[Any],
    ) -> tuple[_PlanFactory[BatchResult], bool]:
        if key is None:
            return factory, False
        key = idem.check_key(key)
        payload_digest = idem.digest(operation, options, payload)
        scope = self._info.table.fullname

        def make(dialect: str) -> Generator[Op, Any, BatchResult]:
            return idem.idempotent(
                factory(dialect),
                self._idem_table,
                dialect=dialect,
                scope=scope,
                key=key,
                payload_digest=payload_digest,
                now=time.time(),
                ttl=self._ttl,
            )

        return make, True

    # ------------------------------------------------------------------ sync API

    def _need(self, want_async: bool, name: str) -> None:
        if want_async != self._is_async:
            kind = "an async_sessionmaker" if want_async else "a sync sessionmaker"
            alt = name[1:] if want_async else "a" + name
            raise ConfigurationError(f"{name}() needs {kind}; use {alt}() with this factory")

    def create_many(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        atomic: bool = True,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Insert ``items`` (one dict of column values each) and report per item.

        ``atomic=True``: one transaction, all or nothing; a failure returns a rejected
        result listing every failing index. ``atomic=False``: the valid items are
        written and each failing index says why.
        """
        self._need(False, "create_many")
        factory = self._create(items, atomic, chunk_size)
        opts = {"atomic": atomic}
        return self._run_sync(*self._with_key(factory, idempotency_key, "create", opts, items))

    def upsert_many(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        atomic: bool = True,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Insert or update ``items`` by the unique key ``conflict`` (default: the PK).

        Existing rows get the columns in ``update`` (default: every supplied column
        outside the key) from the item; ``created`` and ``updated`` say which was which.
        """
        self._need(False, "upsert_many")
        factory = self._upsert(items, conflict, update, atomic, chunk_size)
        opts = {"atomic": atomic, "conflict": conflict, "update": update}
        return self._run_sync(*self._with_key(factory, idempotency_key, "upsert", opts, items))

    def delete_many(
        self,
        ids: Sequence[Any],
        *,
        atomic: bool = True,
        where: Any = None,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Delete rows by primary key (a scalar, or a tuple/dict for composite keys).

        There is no filter-based delete: ``where`` only narrows which of the given
        ids may be deleted (e.g. the caller's tenant); others are reported not found.
        """
        self._need(False, "delete_many")
        factory = self._delete(ids, atomic, chunk_size, where)
        opts = {"atomic": atomic}
        return self._run_sync(*self._with_key(factory, idempotency_key, "delete", opts, ids))

    def create_tables(self) -> None:
        """Create the idempotency-key table if missing (done on first use otherwise)."""
        self._need(False, "create_tables")
        for attempt in (1, 2):
            try:
                with self._factory() as session:
                    self._idem_table.create(session.connection(), checkfirst=True)
                    session.commit()
                break
            except sa_exc.DBAPIError:
                # Another process created it between our check and CREATE: look again.
                if attempt == 2:
                    raise
        self._idem_ready = True

    def purge_expired(self) -> None:
        """Delete expired idempotency keys of every scope."""
        self._need(False, "purge_expired")
        self._run_sync(lambda _d: idem.purge_plan(self._idem_table, time.time()), True)

    def _run_sync(self, factory: _PlanFactory[T], keyed: bool) -> T:
        if keyed and not self._idem_ready:
            self.create_tables()
        try:
            with self._factory() as session:
                dialect = session.get_bind().dialect.name
                if dialect == "sqlite":
                    _sqlite_begin(session.connection().connection.driver_connection, session)
                result = _drive_sync(session, factory(dialect))
                if _commit_wanted(result):
                    if self._before_commit is not None and isinstance(result, BatchResult):
                        self._before_commit(session, result)
                    session.commit()
                else:
                    session.rollback()
                return result
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("The database is unavailable.", retry_after=1) from exc

    # ------------------------------------------------------------------ async API

    async def acreate_many(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        atomic: bool = True,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """:meth:`create_many` on an ``async_sessionmaker``."""
        self._need(True, "acreate_many")
        factory = self._create(items, atomic, chunk_size)
        opts = {"atomic": atomic}
        return await self._run_async(
            *self._with_key(factory, idempotency_key, "create", opts, items)
        )

    async def aupsert_many(
        self,
        items: Sequence[Mapping[str, Any]],
        *,
        conflict: Sequence[str] | None = None,
        update: Sequence[str] | None = None,
        atomic: bool = True,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """:meth:`upsert_many` on an ``async_sessionmaker``."""
        self._need(True, "aupsert_many")
        factory = self._upsert(items, conflict, update, atomic, chunk_size)
        opts = {"atomic": atomic, "conflict": conflict, "update": update}
        return await self._run_async(
            *self._with_key(factory, idempotency_key, "upsert", opts, items)
        )

    async def adelete_many(
        self,
        ids: Sequence[Any],
        *,
        atomic: bool = True,
        where: Any = None,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """:meth:`delete_many` on an ``async_sessionmaker``."""
        self._need(True, "adelete_many")
        factory = self._delete(ids, atomic, chunk_size, where)
        opts = {"atomic": atomic}
        return await self._run_async(*self._with_key(factory, idempotency_key, "delete", opts, ids))

    async def acreate_tables(self) -> None:
        """:meth:`create_tables` on an ``async_sessionmaker``."""
        self._need(True, "acreate_tables")
        table = self._idem_table
        for attempt in (1, 2):
            try:
                async with self._factory() as session:
                    await session.run_sync(lambda s: table.create(s.connection(), checkfirst=True))
                    await session.commit()
                break
            except sa_exc.DBAPIError:
                if attempt == 2:
                    raise
        self._idem_ready = True

    async def apurge_expired(self) -> None:
        """:meth:`purge_expired` on an ``async_sessionmaker``."""
        self._need(True, "apurge_expired")
        await self._run_async(lambda _d: idem.purge_plan(self._idem_table, time.time()), keyed=True)

    async def _run_async(self, factory: _PlanFactory[T], keyed: bool) -> T:
        if keyed and not self._idem_ready:
            await self.acreate_tables()
        try:
            async with self._factory() as session:
                dialect = session.get_bind().dialect.name
                if dialect == "sqlite":
                    raw = await (await session.connection()).get_raw_connection()
                    if not raw.driver_connection.in_transaction:
                        await session.execute(sa.text("BEGIN"))
                result = await _drive_async(session, factory(dialect))
                if _commit_wanted(result):
                    if self._before_commit is not None and isinstance(result, BatchResult):
                        outcome = self._before_commit(session, result)
                        if inspect.isawaitable(outcome):
                            await outcome
                    await session.commit()
                else:
                    await session.rollback()
                return result
        except _UNAVAILABLE as exc:
            raise ServiceUnavailable("The database is unavailable.", retry_after=1) from exc


def _sqlite_begin(driver_connection: Any, session: Any) -> None:
    # pysqlite (and aiosqlite) in their default mode only BEGIN before DML, so a
    # SAVEPOINT opened first would start a transaction that its RELEASE commits,
    # breaking all-or-nothing. Open the real transaction explicitly.
    if not driver_connection.in_transaction:
        session.execute(sa.text("BEGIN"))


def _commit_wanted(result: Any) -> bool:
    if isinstance(result, BatchResult):
        return not (result.rejected or result.replayed)
    return True


def _drive_sync(session: Any, plan: Generator[Op, Any, T]) -> T:
    """Run a plan on a sync ``Session``, feeding results and errors back into it."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = plan.throw(error) if error is not None else plan.send(send)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        send, error = None, None
        try:
            if isinstance(op, Execute):
                if op.params is not None:
                    res = session.execute(op.stmt, op.params)
                else:
                    res = session.execute(op.stmt)
                send = res.all() if op.fetch else None
            elif isinstance(op, Savepoint):
                send = session.begin_nested()
            elif isinstance(op, Release):
                op.handle.commit()
            elif isinstance(op, RollbackTo):
                op.handle.rollback()
        except (sa_exc.SQLAlchemyError, TypeError, ValueError, OverflowError) as exc:
            error = exc


async def _drive_async(session: Any, plan: Generator[Op, Any, T]) -> T:
    """Run a plan on an ``AsyncSession``: the same loop as :func:`_drive_sync`, awaited."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = plan.throw(error) if error is not None else plan.send(send)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        send, error = None, None
        try:
            if isinstance(op, Execute):
                if op.params is not None:
                    res = await session.execute(op.stmt, op.params)
                else:
                    res = await session.execute(op.stmt)
                send = res.all() if op.fetch else None
            elif isinstance(op, Savepoint):
                send = await session.begin_nested()
            elif isinstance(op, Release):
                await op.handle.commit()
            elif isinstance(op, RollbackTo):
                await op.handle.rollback()
        except (sa_exc.SQLAlchemyError, TypeError, ValueError, OverflowError) as exc:
            error = exc
