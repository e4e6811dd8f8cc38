"""What the processor knows about a table: writable columns, keys, and item checks.

Everything here is computed once, when a :class:`BatchProcessor` is built, so that
checking 10,000 items is a tight loop of dict and ``isinstance`` operations.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import json
import operator
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types as sat

from gennet_toolkit.batch_operations._result import ItemError
from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["Row", "TableInfo"]

#: An item that passed validation: its index in the batch and its column values.
Row = tuple[int, Mapping[str, Any]]

_Check = Callable[[Any], str | None]

_INT_RANGES: tuple[tuple[type[sat.TypeEngine[Any]], int], ...] = (
    (sat.SmallInteger, 2**15),
    (sat.BigInteger, 2**63),
    (sat.Integer, 2**31),
)

# Key columns whose values come back from the database exactly as submitted, so that
# rows returned by RETURNING can be matched to the items that produced them.
_EXACT_TYPES = (sat.Integer, sat.String, sat.Uuid)


def _int_check(bound: int) -> _Check:
    lo, hi = -bound, bound - 1

    def check(v: Any) -> str | None:
        if type(v) is not int:
            return "invalid_type" if not isinstance(v, int) or isinstance(v, bool) else None
        return None if lo <= v <= hi else "out_of_range"

    return check


def _str_check(length: int | None) -> _Check:
    def check(v: Any) -> str | None:
        if type(v) is not str and not isinstance(v, str):
            return "invalid_type"
        if length is not None and len(v) > length:
            return "too_long"
        # PostgreSQL refuses NUL in text; SQLite would store it: refuse it everywhere.
        if "\x00" in v:
            return "invalid_value"
        if not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates, e.g. from a "\ud800" JSON escape
                return "invalid_value"
        return None

    return check


def _json_check(v: Any) -> str | None:
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        return "invalid_value"
    return None


def _instance_check(types: tuple[type, ...], *, no_bool: bool = False) -> _Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, types) or (no_bool and isinstance(v, bool)):
            return "invalid_type"
        return None

    return check


def _enum_check(col_type: sat.Enum) -> _Check:
    allowed: set[Any] = set(col_type.enums)
    enum_class = col_type.enum_class
    if enum_class is not None:
        allowed.update(enum_class)

    def check(v: Any) -> str | None:
        if not isinstance(v, str | enum.Enum):
            return "invalid_type"
        return None if v in allowed else "invalid_value"

    return check


def _check_for(col_type: sat.TypeEngine[Any]) -> _Check | None:
    """The value check for a column type, or None when the type is not known here."""
    if isinstance(col_type, sat.TypeDecorator):
        return None  # its own bind processing decides; the database reports the rest
    if isinstance(col_type, sat.Boolean):
        return _instance_check((bool,))
    if isinstance(col_type, sat.Enum):
        return _enum_check(col_type)
    if isinstance(col_type, sat.String):
        return _str_check(col_type.length)
    if isinstance(col_type, sat.Integer):
        bound = next(b for t, b in _INT_RANGES if isinstance(col_type, t))
        return _int_check(bound)
    if isinstance(col_type, sat.Numeric):
        return _instance_check((int, float, decimal.Decimal), no_bool=True)
    if isinstance(col_type, sat.DateTime):
        return _instance_check((_dt.datetime,))
    if isinstance(col_type, sat.Date):
        return _instance_check((_dt.date,))
    if isinstance(col_type, sat.Time):
        return _instance_check((_dt.time,))
    if isinstance(col_type, sat.Uuid):
        return _instance_check((uuid.UUID,) if col_type.as_uuid else (str,))
    if isinstance(col_type, sat.LargeBinary):
        return _instance_check((bytes,))
    if isinstance(col_type, sat.JSON):
        return _json_check
    return None


def _table_of(model: Any) -> tuple[sa.Table, dict[str, sa.Column[Any]]]:
    """The table of an ORM class or a ``Table``, and its columns by item key."""
    if isinstance(model, sa.Table):
        return model, {c.key: c for c in model.columns}
    try:
        mapper = sa.inspect(model)
        table = mapper.local_table
    except Exception as exc:
        raise ConfigurationError("model must be a mapped ORM class or a Table") from exc
    if not isinstance(table, sa.Table):
        raise ConfigurationError("model must map a single Table")
    columns: dict[str, sa.Column[Any]] = {}
    for prop in mapper.column_attrs:
        col = prop.columns[0]
        if isinstance(col, sa.Column) and col.table is table:
            columns[prop.key] = col
    return table, columns


class TableInfo:
    """Columns, keys, foreign keys and per-column checks of one table."""

    def __init__(self, model: Any, *, fields: Collection[str] | None = None) -> None:
        self.table, self.columns = _table_of(model)
        unknown = set(fields or ()) - set(self.columns)
        if unknown:
            raise ConfigurationError(f"fields names unknown columns: {sorted(unknown)}")
        self.writable = frozenset(fields if fields is not None else self.columns)
        by_col = {col: key for key, col in self.columns.items()}
        #: Item key → column key, only for ORM attributes named unlike their column.
        self.renames = {k: c.key for k, c in self.columns.items() if k != c.key}
        self.pk: tuple[str, ...] = tuple(by_col[c] for c in self.table.primary_key.columns)
        if not self.pk:
            raise ConfigurationError("the table needs a primary key")
        self.not_null = frozenset(k for k, c in self.columns.items() if not c.nullable)
        auto = self.table.autoincrement_column
        self.required = frozenset(
            k
            for k, c in self.columns.items()
            if not c.nullable
            and c.default is None
            and c.server_default is None
            and c is not auto
            and k in self.writable
        )
        self.checks: dict[str, _Check] = {}
        for key, col in self.columns.items():
            check = _check_for(col.type)
            if check is not None:
                self.checks[key] = check
        self.unique_keys: list[tuple[str, ...]] = [self.pk]
        for cons in self.table.constraints:
            if isinstance(cons, sa.UniqueConstraint) and len(cons.columns):
                self._add_unique(tuple(by_col[c] for c in cons.columns))
        for index in self.table.indexes:
            cols = list(index.columns)
            if index.unique and cols and len(cols) == len(index.expressions):
                self._add_unique(tuple(by_col[c] for c in cols))
        for key, col in self.columns.items():
            if col.unique:
                self._add_unique((key,))
        #: (local item keys, referred table, referred columns) per foreign key.
        self.foreign_keys: list[tuple[tuple[str, ...], sa.Table, tuple[sa.Column[Any], ...]]] = []
        for fkc in self.table.foreign_key_constraints:
            local = tuple(by_col[c] for c in fkc.columns)
            referred = tuple(e.column for e in fkc.elements)
            self.foreign_keys.append((local, fkc.referred_table, referred))

    def _add_unique(self, key: tuple[str, ...]) -> None:
        if key not in self.unique_keys:
            self.unique_keys.append(key)

    # ------------------------------------------------------------------ keys

    def column(self, key: str) -> sa.Column[Any]:
        """The column behind an item key."""
        return self.columns[key]

    def exact(self, keys: Iterable[str]) -> bool:
        """True when every column round-trips exactly (usable to match RETURNING rows)."""
        return all(
            isinstance(self.columns[k].type, _EXACT_TYPES)
            and not isinstance(self.columns[k].type, sat.TypeDecorator)
            for k in keys
        )

    def correlation_key(self, present: Collection[str]) -> tuple[str, ...] | None:
        """A not-null unique key fully present in ``present`` that round-trips exactly."""
        for key in self.unique_keys:
            if all(k in present and k in self.not_null for k in key) and self.exact(key):
                return key
        return None

    def resolve(self, names: Sequence[str], what: str) -> tuple[str, ...]:
        """Validate configured column names (``conflict=``, ``update=``)."""
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise ConfigurationError(f"{what} names unknown columns: {sorted(unknown)}")
        return tuple(names)

    # ------------------------------------------------------------------ item checks

    def validate(self, items: Sequence[Any], errors: dict[int, ItemError]) -> list[Row]:
        """Check every item against the columns; record failures in ``errors``.

        Unknown or non-writable fields, missing required columns, nulls in not-null
        columns, wrong types, over-long strings and out-of-range integers are caught
        here; nothing about the submitted values goes into the errors.
        """
        writable, required, not_null, checks = (
            self.writable,
            self.required,
            self.not_null,
            self.checks,
        )
        rows: list[Row] = []
        for i, item in enumerate(items):
            if type(item) is not dict and not isinstance(item, Mapping):
                errors[i] = ItemError.of(i, "invalid_item")
                continue
            keys = item.keys()
            if not keys <= writable:
                errors[i] = ItemError.of(i, "unknown_field")
                continue
            if not required <= keys:
                errors[i] = ItemError.of(i, "required", min(required - set(keys)))
                continue
            for k, v in item.items():
                if v is None:
                    if k in not_null:
                        errors[i] = ItemError.of(i, "not_null", k)
                        break
                    continue
                check = checks.get(k)
                if check is not None:
                    code = check(v)
                    if code is not None:
                        errors[i] = ItemError.of(i, code, k)
                        break
            else:
                rows.append((i, item))
        return rows

    def check_keys(
        self, rows: list[Row], key: tuple[str, ...], errors: dict[int, ItemError]
    ) -> list[Row]:
        """Require a non-null value for every column of ``key`` (upsert targets)."""
        out: list[Row] = []
        for i, item in rows:
            missing = next((k for k in key if item.get(k) is None), None)
            if missing is None:
                out.append((i, item))
            else:
                errors[i] = ItemError.of(i, "missing_key", missing)
        return out

    def drop_batch_duplicates(self, rows: list[Row], errors: dict[int, ItemError]) -> list[Row]:
        """Flag every item whose unique key repeats an earlier item's (first one wins)."""
        for key in self.unique_keys:
            getter = operator.itemgetter(*key)
            first, keyset, composite = key[0], frozenset(key), len(key) > 1
            seen: set[Any] = set()
            out: list[Row] = []
            for row in rows:
                item = row[1]
                if not item.keys() >= keyset:
                    out.append(row)  # key not supplied: the database fills it in
                    continue
                value = getter(item)
                if value is None or (composite and None in value):
                    out.append(row)  # NULLs never collide in a unique key
                elif value in seen:
                    errors[row[0]] = ItemError.of(row[0], "duplicate_in_batch", first)
                else:
                    seen.add(value)
                    out.append(row)
            rows = out
        return rows

    def to_params(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        """The item keyed by column key (the same mapping when no attribute is renamed)."""
        if not self.renames:
            return item
        return {self.renames.get(k, k): v for k, v in item.items()}
