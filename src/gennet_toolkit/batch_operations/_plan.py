"""The batch algorithms, written once as generators that yield database operations.

A plan never touches a session: it yields the operations of ``_ops`` and receives
their results (or has the database error thrown back in). The sync and async drivers
in ``_processor`` run the same plans, so there is one tree of logic for both.

Per-item mode does set-based work: items are checked in Python, foreign keys with
one ``SELECT … IN`` per chunk and referred table, and each chunk is written by one
``INSERT … ON CONFLICT … RETURNING``. Only a chunk that still fails (a race, a CHECK
constraint, a value the database refuses) is bisected under savepoints, so the cost
is one savepoint per chunk plus O(k log n) statements for k bad rows.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import types as sat

from gennet_toolkit.batch_operations._ops import (
    Authorize,
    Execute,
    Op,
    Plan,
    Release,
    RollbackTo,
    Savepoint,
    classify,
    dialect_insert,
    item_level,
)
from gennet_toolkit.batch_operations._result import BatchResult, ItemError
from gennet_toolkit.batch_operations._schema import Row, TableInfo

__all__ = ["create_plan", "delete_plan", "upsert_plan"]

_Sub = Generator[Op, Any, None]


def _chunks(rows: Sequence[Row], size: int) -> Generator[Sequence[Row], None, None]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _groups(rows: list[Row]) -> list[tuple[frozenset[str], list[Row]]]:
    """Rows grouped by their set of keys: one executemany needs uniform parameters."""
    groups: dict[frozenset[str], list[Row]] = {}
    for row in rows:
        groups.setdefault(frozenset(row[1]), []).append(row)
    return list(groups.items())


def _key_of(item: Mapping[str, Any], key: tuple[str, ...]) -> Any:
    return item[key[0]] if len(key) == 1 else tuple(item[k] for k in key)


def _in_clause(columns: Sequence[sa.ColumnElement[Any]], values: list[Any]) -> Any:
    if len(columns) == 1:
        return columns[0].in_(values)
    return sa.tuple_(*columns).in_(values)


# Column types sent as typed arrays to unnest() on PostgreSQL. Enums, custom types and
# JSON keep the VALUES path (their array casts or bind processing differ per driver).
_ARRAY_TYPES = (sat.Integer, sat.String, sat.Float, sat.Boolean, sat.DateTime, sat.Date, sat.Uuid)


class _Source:
    """Where a chunk's rows come from in an INSERT.

    On PostgreSQL: ``INSERT … SELECT … FROM unnest(:a::T[], :b::U[], …)``, one statement
    with one array parameter per column, so PostgreSQL parses and plans one small
    statement per chunk (about twice as fast as a 1,000-row ``VALUES`` with
    ``RETURNING``). Elsewhere, or for columns whose types cannot travel as arrays, the
    rows go as executemany parameters (SQLAlchemy's multi-row ``VALUES``).
    """

    def __init__(self, info: TableInfo, present: frozenset[str], dialect: str) -> None:
        self.info = info
        self.keys = sorted(present)
        self.unnest = dialect == "postgresql" and self._arrayable(info, present)
        self.select: Any = None
        if self.unnest:
            from sqlalchemy.dialects.postgresql import ARRAY

            cols = [info.column(k) for k in self.keys]
            arrays = [sa.bindparam(f"gn_{n}", type_=ARRAY(c.type)) for n, c in enumerate(cols)]
            names = [f"c{n}" for n in range(len(cols))]
            source = sa.func.unnest(*arrays).table_valued(*names).render_derived()
            self.cols = cols
            self.select = sa.select(*(source.c[n] for n in names))
            self.floats = [isinstance(c.type, sat.Float) for c in cols]

    @staticmethod
    def _arrayable(info: TableInfo, present: frozenset[str]) -> bool:
        for key in present:
            col_type = info.column(key).type
            if isinstance(col_type, sat.TypeDecorator | sat.Enum) or not isinstance(
                col_type, _ARRAY_TYPES
            ):
                return False
        # INSERT … SELECT evaluates a Python callable default once per statement, not
        # once per row: such tables keep the VALUES path.
        return not any(
            key not in present and col.default is not None and col.default.is_callable
            for key, col in info.columns.items()
        )

    def insert(self, insert: Any) -> Any:
        """``insert`` fed from this source."""
        return insert.from_select(self.cols, self.select) if self.unnest else insert

    def params(self, rows: Sequence[Row]) -> list[Mapping[str, Any]] | dict[str, Any]:
        """The parameters carrying ``rows``."""
        if not self.unnest:
            return [self.info.to_params(item) for _, item in rows]
        out: dict[str, Any] = {}
        for n, (key, is_float) in enumerate(zip(self.keys, self.floats, strict=True)):
            values = [item[key] for _, item in rows]
            if is_float:  # drivers refuse int and float mixed in one float8[]
                values = [None if v is None else float(v) for v in values]
            out[f"gn_{n}"] = values
        return out


class _Batch:
    """State of one planned call: the table, the result and the errors so far."""

    def __init__(
        self,
        info: TableInfo,
        result: BatchResult,
        *,
        dialect: str,
        chunk_size: int,
    ) -> None:
        self.info = info
        self.result = result
        self.dialect = dialect
        self.chunk_size = chunk_size
        self.errors: dict[int, ItemError] = {}

    def fail(self, index: int, code: str, field: str | None = None) -> None:
        self.errors.setdefault(index, ItemError.of(index, code, field))

    def finish(self) -> BatchResult:
        result = self.result
        result.failed = sorted(self.errors.values(), key=lambda e: e.index)
        if result.rejected:
            result.created, result.updated, result.deleted, result.keys = [], [], [], {}
        return result

    # ------------------------------------------------------------------ pre-checks

    def authorize(self, rows: list[Row], authorize: Authorize | None) -> list[Row]:
        if authorize is None:
            return rows
        out: list[Row] = []
        for row in rows:
            if authorize(row[1]):
                out.append(row)
            else:
                self.fail(row[0], "forbidden")
        return out

    def check_foreign_keys(self, rows: list[Row]) -> Generator[Op, Any, list[Row]]:
        """One ``SELECT … IN`` per chunk of distinct referenced keys, per foreign key."""
        info = self.info
        for local, referred_table, referred in info.foreign_keys:
            wanted: set[Any] = set()
            for _, item in rows:
                if all(item.get(k) is not None for k in local):
                    wanted.add(_key_of(item, local))
            if not wanted:
                continue
            found: set[Any] = set()
            if referred_table is info.table:
                # A self-reference may point at a row created by this same batch.
                by_col = {c: k for k, c in info.columns.items()}
                ref_keys = tuple(by_col[c] for c in referred)
                for _, item in rows:
                    if all(k in item for k in ref_keys):
                        found.add(_key_of(item, ref_keys))
            values = sorted(wanted - found, key=repr)
            for start in range(0, len(values), self.chunk_size):
                part = values[start : start + self.chunk_size]
                stmt = sa.select(*referred).where(_in_clause(referred, part))
                got = yield Execute(stmt, fetch=True)
                found.update(r[0] if len(referred) == 1 else tuple(r) for r in got)
            out: list[Row] = []
            for i, item in rows:
                if (
                    all(item.get(k) is not None for k in local)
                    and _key_of(item, local) not in found
                ):
                    self.fail(i, "foreign_key", local[0])
                else:
                    out.append((i, item))
            rows = out
        return rows

    # ------------------------------------------------------------------ guarded writes

    def guarded(
        self,
        write: Callable[[Sequence[Row]], _Sub],
        rows: Sequence[Row],
        *,
        referenced_code: str = "foreign_key",
    ) -> _Sub:
        """Run ``write(rows)`` under a savepoint; on a row-level error, bisect.

        Halves that succeed are kept; a single row that fails gets the error code of
        the constraint it violated.
        """
        handle = yield Savepoint()
        try:
            yield from write(rows)
        except Exception as exc:
            if not item_level(exc):
                raise
            yield RollbackTo(handle)
            if len(rows) == 1:
                code = classify(exc)
                if code == "foreign_key":
                    code = referenced_code
                self.fail(rows[0][0], code)
                return
            mid = len(rows) // 2
            yield from self.guarded(write, rows[:mid], referenced_code=referenced_code)
            yield from self.guarded(write, rows[mid:], referenced_code=referenced_code)
        else:
            yield Release(handle)

    def run(
        self,
        write: Callable[[Sequence[Row]], _Sub],
        rows: Sequence[Row],
        *,
        careful: bool,
        referenced_code: str = "foreign_key",
    ) -> _Sub:
        for chunk in _chunks(rows, self.chunk_size):
            if careful:
                yield from self.guarded(write, chunk, referenced_code=referenced_code)
            else:
                yield from write(chunk)


# ---------------------------------------------------------------------- create


def _create_writer(b: _Batch, present: frozenset[str], *, careful: bool, return_keys: bool) -> Any:
    """The chunk writer for ``create_many`` for items carrying the keys ``present``.

    Per-item (``careful``) with a usable unique key: ``ON CONFLICT DO NOTHING
    RETURNING``, matching returned keys to items. Atomic: a plain INSERT, through
    ``unnest()`` on PostgreSQL when the column types allow it.
    """
    info, table, result = b.info, b.info.table, b.result  # a fresh writer per attempt
    pk_cols = [info.column(k) for k in info.pk]
    pk_given = all(k in present for k in info.pk)
    corr = info.correlation_key(present)
    source = _Source(info, present, b.dialect)
    want_keys = return_keys and not pk_given

    if corr is not None and (careful or (source.unnest and want_keys)):
        # Rows that come back were written; with DO NOTHING, the others collided with
        # an existing (or concurrently inserted) row.
        returned_cols = list(dict.fromkeys([*pk_cols, *(info.column(k) for k in corr)]))
        pos = [returned_cols.index(info.column(k)) for k in corr]
        pk_pos = [returned_cols.index(c) for c in pk_cols]
        stmt = source.insert(dialect_insert(table, b.dialect))
        if careful:
            stmt = stmt.on_conflict_do_nothing()
        stmt = stmt.returning(*returned_cols)
        getter = operator.itemgetter(*pos)
        pk_row_getter = operator.itemgetter(*pk_pos)

        def write_corr(rows: Sequence[Row]) -> _Sub:
            got = yield Execute(stmt, source.params(rows), fetch=True)
            written = {getter(r): pk_row_getter(r) for r in got}
            for i, item in rows:
                key = _key_of(item, corr)
                if key in written:
                    result.created.append(i)
                    result.keys[i] = written[key]
                else:
                    b.fail(i, "duplicate", corr[0])

        return write_corr

    pk_getter: Callable[[Mapping[str, Any]], Any] | None = (
        operator.itemgetter(*info.pk) if pk_given else None
    )
    if source.unnest and not want_keys:
        bulk = source.insert(sa.insert(table))

        def write_unnest(rows: Sequence[Row]) -> _Sub:
            yield Execute(bulk, source.params(rows))
            for i, item in rows:
                result.created.append(i)
                if pk_getter is not None:
                    result.keys[i] = pk_getter(item)

        return write_unnest

    stmt = sa.insert(table)
    if want_keys:
        stmt = stmt.returning(*pk_cols, sort_by_parameter_order=True)

    def write_plain(rows: Sequence[Row]) -> _Sub:
        got = yield Execute(stmt, [info.to_params(item) for _, item in rows], fetch=want_keys)
        for n, (i, item) in enumerate(rows):
            result.created.append(i)
            if pk_getter is not None:
                result.keys[i] = pk_getter(item)
            elif want_keys:
                row = got[n]
                result.keys[i] = row[0] if len(pk_cols) == 1 else tuple(row)

    return write_plain


def create_plan(
    info: TableInfo,
    items: Sequence[Any],
    *,
    atomic: bool,
    dialect: str,
    chunk_size: int,
    authorize: Authorize | None,
    return_keys: bool,
) -> Plan:
    """Insert ``items``: all or nothing (``atomic``) or item by item."""
    dialect_insert(info.table, dialect)  # refuse unsupported dialects up front
    b = _Batch(
        info,
        BatchResult(operation="create", atomic=atomic, total=len(items)),
        dialect=dialect,
        chunk_size=chunk_size,
    )
    rows = info.validate(items, b.errors)
    rows = b.authorize(rows, authorize)
    rows = info.drop_batch_duplicates(rows, b.errors)
    if atomic and b.errors:
        return b.finish()
    groups = _groups(rows)
    if atomic:
        # Fast path: plain executemany. Pre-checks against the database only run if
        # it fails, to tell the caller which items were at fault.
        handle = yield Savepoint()
        try:
            for present, group in groups:
                write = _create_writer(b, present, careful=False, return_keys=return_keys)
                yield from b.run(write, group, careful=False)
        except Exception as exc:
            if not item_level(exc):
                raise
            yield RollbackTo(handle)
            b.result = BatchResult(operation="create", atomic=atomic, total=len(items))
        else:
            yield Release(handle)
            return b.finish()
    # Per-item mode, or diagnosing a failed atomic batch (the driver then rolls back).
    rows = yield from b.check_foreign_keys(rows)
    for present, group in _groups(rows):
        write = _create_writer(b, present, careful=True, return_keys=return_keys)
        yield from b.run(write, group, careful=True)
    return b.finish()


# ---------------------------------------------------------------------- upsert


def upsert_plan(
    info: TableInfo,
    items: Sequence[Any],
    *,
    conflict: tuple[str, ...],
    update: tuple[str, ...] | None,
    atomic: bool,
    dialect: str,
    chunk_size: int,
    authorize: Authorize | None,
) -> Plan:
    """Insert or update ``items`` on the unique key ``conflict`` (ON CONFLICT DO UPDATE)."""
    insert = dialect_insert(info.table, dialect)
    b = _Batch(
        info,
        BatchResult(operation="upsert", atomic=atomic, total=len(items)),
        dialect=dialect,
        chunk_size=chunk_size,
    )
    rows = info.validate(items, b.errors)
    rows = info.check_keys(rows, conflict, b.errors)
    rows = b.authorize(rows, authorize)
    rows = info.drop_batch_duplicates(rows, b.errors)
    if atomic and b.errors:
        return b.finish()
    if not atomic:
        rows = yield from b.check_foreign_keys(rows)
    conflict_cols = [info.column(k) for k in conflict]
    pk_cols = [info.column(k) for k in info.pk]
    returned = list(dict.fromkeys([*pk_cols, *conflict_cols]))
    pos = [returned.index(c) for c in conflict_cols]
    pk_pos = [returned.index(c) for c in pk_cols]
    getter, pk_getter = operator.itemgetter(*pos), operator.itemgetter(*pk_pos)
    extra: list[Any] = []
    if dialect == "postgresql":
        # xmax is 0 only on a freshly inserted row version: tells insert from update
        # in the same statement, race-free.
        extra = [sa.literal_column("xmax = 0").label("gennet_inserted")]
    existing: set[Any] = set()

    def write_factory(present: frozenset[str]) -> Callable[[Sequence[Row]], _Sub]:
        names = [k for k in (update if update is not None else info.columns) if k in present]
        names = [k for k in names if k not in conflict] or [conflict[0]]
        excluded = insert.excluded
        set_ = {info.column(k).key: excluded[info.column(k).key] for k in names}
        source = _Source(info, present, dialect)
        stmt = (
            source.insert(insert)
            .on_conflict_do_update(index_elements=conflict_cols, set_=set_)
            .returning(*returned, *extra)
        )

        def write(rows: Sequence[Row]) -> _Sub:
            if not extra:
                # SQLite: learn which keys exist first (one SELECT per chunk).
                keys = [_key_of(item, conflict) for _, item in rows]
                got_existing = yield Execute(
                    sa.select(*conflict_cols).where(_in_clause(conflict_cols, keys)), fetch=True
                )
                existing.update(r[0] if len(conflict) == 1 else tuple(r) for r in got_existing)
            got = yield Execute(stmt, source.params(rows), fetch=True)
            written = {getter(r): r for r in got}
            for i, item in rows:
                key = _key_of(item, conflict)
                row = written.get(key)
                if row is None:
                    b.fail(i, "conflict", conflict[0])
                    continue
                inserted = row[-1] if extra else key not in existing
                (b.result.created if inserted else b.result.updated).append(i)
                b.result.keys[i] = pk_getter(row)

        return write

    if atomic:
        handle = yield Savepoint()
        try:
            for present, group in _groups(rows):
                yield from b.run(write_factory(present), group, careful=False)
        except Exception as exc:
            if not item_level(exc):
                raise
            yield RollbackTo(handle)
            b.result = BatchResult(operation="upsert", atomic=atomic, total=len(items))
            rows = yield from b.check_foreign_keys(rows)
        else:
            yield Release(handle)
            return b.finish()
    for present, group in _groups(rows):
        yield from b.run(write_factory(present), group, careful=True)
    return b.finish()


# ---------------------------------------------------------------------- delete


def delete_plan(
    info: TableInfo,
    ids: Sequence[Any],
    *,
    atomic: bool,
    dialect: str,
    chunk_size: int,
    where: Any,
) -> Plan:
    """Delete rows by primary key; ids outside ``where`` count as not found."""
    dialect_insert(info.table, dialect)
    b = _Batch(
        info,
        BatchResult(operation="delete", atomic=atomic, total=len(ids)),
        dialect=dialect,
        chunk_size=chunk_size,
    )
    pk = info.pk
    pk_cols = [info.column(k) for k in pk]
    checks = [info.checks.get(k) for k in pk]
    rows: list[tuple[int, Any]] = []
    seen: set[Any] = set()
    for i, raw in enumerate(ids):
        key = _normalise_id(raw, pk)
        if key is None:
            b.fail(i, "invalid_type", pk[0])
            continue
        parts = key if len(pk) > 1 else (key,)
        for name, check, value in zip(pk, checks, parts, strict=True):
            code = "not_null" if value is None else (check(value) if check else None)
            if code is not None:
                b.fail(i, code, name)
                break
        else:
            if key in seen:
                b.fail(i, "duplicate_in_batch", pk[0])
            else:
                seen.add(key)
                rows.append((i, key))
    if atomic and b.errors:
        return b.finish()

    def write(chunk: Sequence[tuple[int, Any]]) -> _Sub:
        stmt = sa.delete(info.table).where(_in_clause(pk_cols, [k for _, k in chunk]))
        if where is not None:
            stmt = stmt.where(where)
        got = yield Execute(stmt.returning(*pk_cols), fetch=True)
        gone = {r[0] if len(pk) == 1 else tuple(r) for r in got}
        for i, key in chunk:
            if key in gone:
                b.result.deleted.append(i)
                b.result.keys[i] = key
            else:
                b.fail(i, "not_found")

    if atomic:
        handle = yield Savepoint()
        try:
            yield from b.run(write, rows, careful=False)
        except Exception as exc:
            if not item_level(exc):
                raise
            yield RollbackTo(handle)
            b.result = BatchResult(operation="delete", atomic=atomic, total=len(ids))
        else:
            yield Release(handle)
            return b.finish()
    yield from b.run(write, rows, careful=True, referenced_code="still_referenced")
    return b.finish()


def _normalise_id(raw: Any, pk: tuple[str, ...]) -> Any:
    """A scalar id for a single-column key, a tuple for a composite one; None if malformed."""
    if len(pk) == 1:
        if isinstance(raw, Mapping):
            return raw.get(pk[0]) if set(raw) == {pk[0]} else None
        return None if isinstance(raw, list | tuple | set | dict) else raw
    if isinstance(raw, Mapping):
        return tuple(raw.get(k) for k in pk) if set(raw) == set(pk) else None
    if isinstance(raw, list | tuple) and len(raw) == len(pk):
        return tuple(raw)
    return None
