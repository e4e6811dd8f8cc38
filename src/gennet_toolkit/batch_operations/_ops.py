"""The operations a batch plan yields, and how database errors map to item codes.

A plan never touches a session: it yields :class:`Execute`, :class:`Savepoint`,
:class:`Release` and :class:`RollbackTo` requests and receives their results (or has
the database error thrown back in); the drivers in ``_processor`` carry them out.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from gennet_toolkit.batch_operations._result import BatchResult
from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "Authorize",
    "Execute",
    "Op",
    "Plan",
    "Release",
    "RollbackTo",
    "Savepoint",
    "classify",
    "dialect_insert",
    "item_level",
]


@dataclass(slots=True)
class Execute:
    """Run ``stmt`` (with ``params`` as executemany rows); send back rows when ``fetch``."""

    stmt: Any
    params: list[Mapping[str, Any]] | Mapping[str, Any] | None = None
    fetch: bool = False


@dataclass(slots=True)
class Savepoint:
    """Open a savepoint; the driver sends back its handle."""


@dataclass(slots=True)
class Release:
    """Release (commit) the savepoint ``handle``."""

    handle: Any


@dataclass(slots=True)
class RollbackTo:
    """Roll back to the savepoint ``handle``."""

    handle: Any


Op = Execute | Savepoint | Release | RollbackTo
Plan = Generator[Op, Any, BatchResult]
Authorize = Callable[[Mapping[str, Any]], bool]

_PG_CODES = {
    "23505": "duplicate",
    "23503": "foreign_key",
    "23502": "not_null",
    "23514": "check_violation",
    "23P01": "conflict",
}
_SQLITE_CODES = {
    "SQLITE_CONSTRAINT_UNIQUE": "duplicate",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "duplicate",
    "SQLITE_CONSTRAINT_FOREIGNKEY": "foreign_key",
    "SQLITE_CONSTRAINT_NOTNULL": "not_null",
    "SQLITE_CONSTRAINT_CHECK": "check_violation",
}


def item_level(exc: BaseException) -> bool:
    """True for errors one bad row can cause (constraints, refused values).

    Connection loss, timeouts and SQL bugs are not: they propagate.
    """
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError):
        return True
    # A bind processor or the driver refusing a value before any SQL is sent
    # (SQLAlchemy wraps some of these in StatementError, drivers raise others bare).
    if isinstance(exc, TypeError | ValueError | OverflowError):
        return True
    return isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


def classify(exc: BaseException) -> str:
    """Map a database error to an item error code, reading only codes, never text."""
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str):
        if state in _PG_CODES:
            return _PG_CODES[state]
        return "conflict" if state.startswith("23") else "invalid_value"
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str) and name in _SQLITE_CODES:
        return _SQLITE_CODES[name]
    return "conflict" if isinstance(exc, sa_exc.IntegrityError) else "invalid_value"


def dialect_insert(table: sa.Table, dialect: str) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the dialect (SQLite or PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise ConfigurationError(
        f"batch_operations supports SQLite and PostgreSQL, not the {dialect!r} dialect"
    )
