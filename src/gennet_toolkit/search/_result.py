"""What a FilterSet produces: the parsed query and the result of applying it."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select

__all__ = ["FilterResult", "ParsedQuery", "dialect_name", "normal_value"]


@dataclass(frozen=True, slots=True)
class FilterResult:
    """What :meth:`FilterSet.apply` produced.

    ``select`` is the filtered and ordered statement; ``order_by`` the ordering as
    column expressions with direction (hand it to ``CursorPaginator(order_by=…)``);
    ``fingerprint`` a stable hash of the normalised filters and search, independent of
    parameter order (bind cursors to it); ``filters``, ``sort`` and ``search`` are the
    normalised query, e.g. to echo in a response's ``meta``.
    """

    select: Select[Any]
    order_by: list[ColumnElement[Any]]
    fingerprint: str
    filters: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    sort: tuple[str, ...] = ()
    search: str | None = None


@dataclass(slots=True)
class ParsedQuery:
    """A validated query: typed values per (field, operator), sort keys and search text."""

    clauses: dict[tuple[str, str], list[object]] = field(default_factory=dict)
    sort: list[tuple[str, bool]] = field(default_factory=list)
    search: str | None = None


def normal_value(value: object) -> str:
    """The canonical text of a parsed value (fingerprints, ``FilterResult.filters``)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, decimal.Decimal):
        return str(value.normalize())
    return str(value)


def dialect_name(dialect: Any) -> str | None:
    """The dialect name of a name, dialect, engine, connection or (async) session."""
    if dialect is None or isinstance(dialect, str):
        return dialect
    for attr in ("dialect", "bind"):
        inner = getattr(dialect, attr, None)
        if inner is not None and inner is not dialect:
            if attr == "dialect":
                name = getattr(inner, "name", None)
                if isinstance(name, str):
                    return name
            return dialect_name(inner)
    name = getattr(dialect, "name", None)
    if isinstance(name, str):
        return name
    sync = getattr(dialect, "sync_engine", None) or getattr(dialect, "sync_session", None)
    return dialect_name(sync) if sync is not None else None
