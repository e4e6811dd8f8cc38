"""The sync store's append transaction run on the DBAPI connection itself.

An append is a handful of fixed statements (lock, read the head, insert, commit), yet
through SQLAlchemy's ``Connection`` each costs an execution context, a result object
and the ``Connection``/transaction bookkeeping: about half the CPU of a single-event
append. This driver runs the same plan (:meth:`Core.append`, so one copy of the
locking and chaining logic) with SQL written once per store and the driver's own
cursor, keeping the pool (checkout, pre-ping, invalidation of a dead connection).

It is used only where it changes nothing the caller can observe: the ``pysqlite`` and
``psycopg`` (3) drivers, a connection that is not in autocommit mode,
and an engine with no statement or transaction listeners (tracing and auditing
hooks keep seeing every append through the regular path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from gennet_toolkit.event_sourcing._core import Core, Exec, Plan
from gennet_toolkit.exceptions import ConcurrencyError, ServiceUnavailable

__all__ = ["DriverAppend"]

_DRIVERS = {("sqlite", "pysqlite"), ("postgresql", "psycopg")}
#: Engine events whose listeners must see the append's statements and transaction.
_WATCHED = (
    "before_cursor_execute",
    "after_cursor_execute",
    "begin",
    "commit",
    "rollback",
)
#: Insert column order (the keys of the parameter dicts ``Core.append`` builds).
INSERT_COLUMNS = (
    "position",
    "stream_id",
    "version",
    "type",
    "schema_version",
    "data",
    "actor",
    "correlation_id",
    "meta",
    "occurred_at",
    "hash",
)


class DriverAppend:
    """Runs ``Core.append`` plans on a raw pooled DBAPI connection (see module doc)."""

    def __init__(self, core: Core, engine: sa.Engine) -> None:
        dialect = engine.dialect
        self.engine = engine
        self.supported = (dialect.name, dialect.driver) in _DRIVERS
        self.sqlite = core.sqlite
        self._dialect = dialect
        self._dbapi: Any = getattr(dialect, "loaded_dbapi", None)
        events = core.tables.events
        table = dialect.identifier_preparer.format_table(events)
        q = dialect.identifier_preparer.quote
        self._ph = ph = "?" if core.sqlite else "%s"
        head = f"SELECT {q('position')}, {q('hash')} FROM {table} ORDER BY {q('position')} DESC"
        self._sql = {
            # The lock id is an int computed by the store: inlined, not a parameter.
            "lock": f"SELECT pg_advisory_xact_lock({int(core.lock_id)})",
            "head_version": (
                f"SELECT {q('position')}, {q('hash')}, (SELECT max({q('version')}) FROM {table}"
                f" WHERE {q('stream_id')} = {ph}) FROM {table}"
                f" ORDER BY {q('position')} DESC LIMIT 1"
            ),
            "head": f"{head} LIMIT 1",
            "insert": (
                f"INSERT INTO {table} ({', '.join(q(c) for c in INSERT_COLUMNS)})"
                f" VALUES ({', '.join([ph] * len(INSERT_COLUMNS))})"
            ),
        }
        self._versions = (
            f"SELECT {q('stream_id')}, max({q('version')}) FROM {table}"
            f" WHERE {q('stream_id')} IN ({{}}) GROUP BY {q('stream_id')}"
        )
        # SQLite stores datetimes as text in SQLAlchemy's format: use its own processor
        # so rows written here read back exactly like rows written through Core.
        self._occurred: Callable[[Any], Any] | None = events.c.occurred_at.type.dialect_impl(
            dialect
        ).bind_processor(dialect)

    def usable(self) -> bool:
        """Whether this engine can take the driver path right now (listeners can come later)."""
        if not self.supported or self._dbapi is None:
            return False
        dispatch = self.engine.dispatch
        return not any(getattr(dispatch, name, None) for name in _WATCHED)

    # ------------------------------------------------------------------ running

    def _row(self, p: dict[str, Any]) -> tuple[Any, ...]:
        row = tuple(p[c] for c in INSERT_COLUMNS)
        if self._occurred is None:
            return row
        return (*row[:9], self._occurred(row[9]), row[10])

    def _exec(self, cursor: Any, op: Exec) -> Any:
        key = op.key
        if key == "insert":
            if isinstance(op.params, dict):
                cursor.execute(self._sql["insert"], self._row(op.params))
            else:
                cursor.executemany(self._sql["insert"], [self._row(p) for p in op.params])
            return None
        if key == "versions":
            streams = op.params["streams"]
            cursor.execute(self._versions.format(", ".join([self._ph] * len(streams))), streams)
        elif key == "head_version":
            cursor.execute(self._sql[key], (op.params["s"],))
        elif key in ("lock", "head"):
            cursor.execute(self._sql[key])
        else:  # pragma: no cover - Core.append yields only the keys above
            raise RuntimeError(f"no driver statement for {key!r}")
        return cursor.fetchall() if op.fetch else None

    def run(self, plan: Plan[None]) -> bool:
        """Run ``plan`` as one transaction; ``False`` when the connection cannot (autocommit).

        Raises the toolkit's errors: ConcurrencyError for a constraint collision,
        ServiceUnavailable for a refused or lost connection.
        """
        try:
            # The pool hands connect errors back unwrapped (the driver's own).
            raw = self.engine.raw_connection()
        except (sa.exc.SQLAlchemyError, self._dbapi.Error, OSError) as exc:
            raise ServiceUnavailable("The event store is unavailable.") from exc
        try:
            if not self.sqlite and getattr(raw.driver_connection, "autocommit", False):
                return False
            cursor = raw.cursor()
            try:
                if self.sqlite:
                    # Take SQLite's write lock before reading the head (see Core).
                    cursor.execute("BEGIN IMMEDIATE")
                result: Any = None
                while True:
                    try:
                        op = plan.send(result)
                    except StopIteration:
                        break
                    result = self._exec(cursor, op) if isinstance(op, Exec) else None
                raw.commit()
            except BaseException as exc:
                self._abort(raw, cursor, exc)
                mapped = self._translate(exc)
                if mapped is exc:
                    raise
                raise mapped from exc
            finally:
                cursor.close()
            return True
        finally:
            raw.close()

    def _translate(self, exc: BaseException) -> BaseException:
        dbapi = self._dbapi
        if isinstance(exc, dbapi.IntegrityError):
            # Someone bypassing the lock wrote this (stream, version) or position first.
            return ConcurrencyError()
        if isinstance(exc, (dbapi.OperationalError, dbapi.InterfaceError, OSError)):
            return ServiceUnavailable("The event store is unavailable.")
        return exc

    def _abort(self, raw: Any, cursor: Any, exc: BaseException) -> None:
        dbapi = self._dbapi
        if isinstance(exc, dbapi.Error) and self._dialect.is_disconnect(
            exc, raw.dbapi_connection, cursor
        ):
            raw.invalidate(exc)
            return
        try:
            raw.rollback()
        except Exception as err:
            # A connection that cannot even roll back goes; the pool opens a new one.
            raw.invalidate(err)
