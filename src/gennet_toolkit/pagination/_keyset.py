"""Sort keys and keyset predicates for SQLAlchemy 2 selects (imported only when paging)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, and_, false, inspect, literal, or_, tuple_
from sqlalchemy.exc import NoInspectionAvailable
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, Label, UnaryExpression
from sqlalchemy.sql.selectable import FromClause, Join
from sqlalchemy.types import BigInteger, DateTime, Integer, SmallInteger

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.pagination._paginator import InvalidSort

__all__ = ["OrderSpec", "SortKey", "keyset_predicate", "resolve_keys", "spec_text"]

#: A sort key: a column or SQL expression (``Gene.symbol``, ``table.c.weight.desc()``,
#: ``Gene.score.desc().nulls_last()``), or a selected column's name (``"-score"``).
OrderSpec = Any

Nulls = Literal["first", "last"]


def _plain(obj: Any) -> Any:
    return obj._deannotate() if hasattr(obj, "_deannotate") else obj


@dataclass(frozen=True, slots=True)
class SortKey:
    """One resolved sort key: the expression, its direction and NULL placement."""

    expr: ColumnElement[Any]
    descending: bool
    nulls_first: bool
    nullable: bool
    python_type: type | None
    tz_aware: bool | None  # datetimes: naive required (False), aware (True), either (None)
    text: str

    def order_clause(self, reverse: bool) -> ColumnElement[Any]:
        """``ORDER BY`` term, with explicit NULLS placement so both dialects agree."""
        desc = self.descending != reverse
        clause = self.expr.desc() if desc else self.expr.asc()
        if not self.nullable:
            return clause  # no NULLS clause: keeps plain indexes usable
        return clause.nulls_first() if self.nulls_first != reverse else clause.nulls_last()

    def accepts(self, value: Any, dialect: str) -> bool:
        """Whether a decoded cursor value can be bound to this key without a driver error."""
        if value is None:
            return self.nullable
        t = self.python_type
        if t is None:
            return True
        if isinstance(value, bool) or t is bool:
            return type(value) is bool and t is bool
        if t is dt.date:
            return type(value) is dt.date
        if not isinstance(value, t):
            return False
        if type(value) is int and dialect != "sqlite":
            # PostgreSQL binds to the column's width: a larger int is a driver error.
            bits = _int_bits(self.expr.type)
            return -(1 << (bits - 1)) <= value < (1 << (bits - 1))
        if isinstance(value, dt.datetime):
            aware = value.utcoffset() is not None
            want = self.tz_aware
            if want is None and dialect == "postgresql":
                want = True
            return want is None or aware == want
        return True


def _int_bits(sql_type: Any) -> int:
    if isinstance(sql_type, BigInteger):
        return 64
    if isinstance(sql_type, SmallInteger):
        return 16
    if isinstance(sql_type, Integer):
        return 32
    return 64


def _unwrap(item: OrderSpec, stmt: Select[Any]) -> tuple[ColumnElement[Any], bool, bool | None]:
    descending = False
    nulls: bool | None = None
    if isinstance(item, str):
        name = item
        if name[:1] in "-+" and name:
            descending, name = name[0] == "-", name[1:]
        col = stmt.selected_columns.get(name) if name else None
        if col is None:
            # A 400 without echoing the name (client sorts are allowlisted before this).
            raise InvalidSort()
        expr: Any = col
    else:
        expr = item.__clause_element__() if hasattr(item, "__clause_element__") else item
    while isinstance(expr, UnaryExpression) and expr.modifier is not None:
        mod = expr.modifier
        if mod is operators.desc_op:
            descending = True
        elif mod is operators.asc_op:
            descending = False
        elif mod is operators.nulls_first_op:
            nulls = True
        elif mod is operators.nulls_last_op:
            nulls = False
        else:
            break
        expr = expr.element
    if isinstance(expr, Label):
        expr = expr.element  # WHERE cannot refer to a SELECT label
    if not isinstance(expr, ColumnElement):
        raise ConfigurationError(f"cannot sort on {item!r}: not a column or SQL expression")
    return expr, descending, nulls


def _selectable_of(target: Any) -> FromClause | None:
    """The FROM element an ORM ``.join()`` target stands for (table, alias or relationship)."""
    if isinstance(target, FromClause):
        return target
    try:
        insp = inspect(target)
    except NoInspectionAvailable:
        return None
    prop = getattr(insp, "property", None)
    if prop is not None and hasattr(prop, "mapper"):  # Gene.edges, maybe .of_type(alias)
        of_type = getattr(target, "_of_type", None)
        return _selectable_of(of_type) if of_type is not None else prop.mapper.selectable
    sel = getattr(insp, "selectable", None)
    return sel if isinstance(sel, FromClause) else None


def _from_leaves(stmt: Select[Any]) -> list[tuple[FromClause, bool]]:
    """Every table (or alias) the statement selects from, the selected entity's first,
    and whether an outer join can make its columns NULL.

    Read from the statement's columns and joins rather than ``get_final_froms()``, which
    compiles the statement (slow) and includes eager-load joins that are not ours to sort.
    """
    setup = getattr(stmt, "_setup_joins", None)
    from_obj = getattr(stmt, "_from_obj", None)
    found: dict[int, list[Any]] = {}

    def walk(f: FromClause, outer: bool) -> None:
        if isinstance(f, Join):
            walk(f.left, outer or f.full)
            walk(f.right, outer or f.isouter or f.full)
            return
        entry = found.setdefault(id(_plain(f)), [f, outer])
        entry[1] = entry[1] or outer

    if setup is None or from_obj is None:  # pragma: no cover - a future SQLAlchemy
        for f in stmt.get_final_froms():
            walk(f, False)
        return [(f, o) for f, o in found.values()]
    for f in stmt.columns_clause_froms:
        walk(f, False)
    for f in from_obj:
        walk(f, False)
    for target, _onclause, _from, flags in setup:
        sel = _selectable_of(target)
        if sel is None:
            raise ConfigurationError(
                f"cannot tell which table {target!r} joins; pass tiebreak=[...] explicitly"
            )
        if flags.get("full"):
            for entry in found.values():
                entry[1] = True
        walk(sel, bool(flags.get("isouter") or flags.get("full")))
    return [(f, o) for f, o in found.values()]


def _make_key(
    expr: ColumnElement[Any],
    descending: bool,
    nulls: bool | None,
    default_nulls: Nulls,
    inner_tables: list[Any],
) -> SortKey:
    table = getattr(expr, "table", None)
    not_null = (
        getattr(expr, "nullable", True) is False
        and table is not None
        and any(_plain(table) is t for t in inner_tables)
    )
    try:
        ptype: type | None = expr.type.python_type
    except NotImplementedError:
        ptype = None
    tz: bool | None = None
    if isinstance(expr.type, DateTime):
        tz = None if expr.type.timezone else False
    nulls_first = (default_nulls == "first") if nulls is None else nulls
    name = getattr(expr, "name", None)
    text = f"{_plain(table).name}.{name}" if table is not None and name else str(expr)
    text += ("-" if descending else "+") + ("f" if nulls_first else "l")
    return SortKey(expr, descending, nulls_first, not not_null, ptype, tz, text)


def resolve_keys(
    stmt: Select[Any],
    order_by: Sequence[OrderSpec],
    tiebreak: Sequence[OrderSpec] | None,
    default_nulls: Nulls,
) -> list[SortKey]:
    """The full sort: ``order_by`` then a unique tiebreak.

    Without an explicit ``tiebreak``, the primary key of every table in the FROM clause
    is appended (the selected entity's first), so rows stay unique across joins.
    """
    leaves = _from_leaves(stmt)
    inner = [_plain(f) for f, outer in leaves if not outer]
    keys: list[SortKey] = []
    seen: list[Any] = []
    for item in order_by:
        expr, desc, nulls = _unwrap(item, stmt)
        keys.append(_make_key(expr, desc, nulls, default_nulls, inner))
        seen.append(_plain(expr))
    if tiebreak is not None:
        extra = [_unwrap(item, stmt) for item in tiebreak]
        if not extra:
            raise ConfigurationError("tiebreak= must name at least one column")
    else:
        extra = []
        for f, _outer in leaves:
            pk = list(getattr(f, "primary_key", ()) or ())
            if not pk:
                raise ConfigurationError(
                    f"cannot find a primary key for {f!r} to make the sort unique; pass "
                    "tiebreak=[...] with columns that are unique across the result rows"
                )
            extra += [(col, False, None) for col in pk]
    for expr, desc, nulls in extra:
        if any(_plain(expr) is s for s in seen):
            continue
        keys.append(_make_key(expr, desc, nulls, default_nulls, inner))
        seen.append(_plain(expr))
    return keys


def spec_text(keys: Sequence[SortKey]) -> str:
    """A canonical description of the sort, for binding cursors to it."""
    return ",".join(k.text for k in keys)


def _after(key: SortKey, v: Any, reverse: bool) -> ColumnElement[bool] | None:
    """Rows whose ``key`` comes strictly after ``v`` in the (possibly reversed) order."""
    desc = key.descending != reverse
    nulls_first = key.nulls_first != reverse
    col = key.expr
    if v is None:
        # NULLs sort as one block: after it come the non-NULLs, or nothing.
        return col.is_not(None) if nulls_first else None
    # An explicit bind parameter: SQLAlchemy refuses ``col > True`` with a bare bool.
    bound = literal(v, col.type)
    cmp: ColumnElement[bool] = col < bound if desc else col > bound
    if key.nullable and not nulls_first:
        return or_(cmp, col.is_(None))
    return cmp


def _equal(key: SortKey, v: Any) -> ColumnElement[bool]:
    return key.expr.is_(None) if v is None else key.expr == literal(v, key.expr.type)


def keyset_predicate(
    keys: Sequence[SortKey], values: Sequence[Any], *, reverse: bool, inclusive: bool
) -> ColumnElement[bool]:
    """``WHERE`` clause selecting rows after (``reverse``: before) the position ``values``.

    Uses a row-value comparison when every key is NOT NULL and sorts the same way (the
    best shape for a composite index); otherwise the expanded OR form, NULL-aware per key,
    with the first key's range repeated on top so the planner can still seek an index.
    """
    desc0 = keys[0].descending
    if all(not k.nullable and k.descending == desc0 for k in keys):
        left = tuple_(*(k.expr for k in keys))
        right = tuple_(*(literal(v, k.expr.type) for k, v in zip(keys, values, strict=True)))
        if desc0 != reverse:
            return left <= right if inclusive else left < right
        return left >= right if inclusive else left > right
    terms: list[ColumnElement[bool]] = []
    eqs: list[ColumnElement[bool]] = []
    for key, v in zip(keys, values, strict=True):
        after = _after(key, v, reverse)
        if after is not None:
            terms.append(and_(*eqs, after))
        eqs.append(_equal(key, v))
    if inclusive:
        terms.append(and_(*eqs))
    if not terms:
        return false()
    pred = or_(*terms)
    first, v0 = keys[0], values[0]
    if not first.nullable and v0 is not None:
        b0 = literal(v0, first.expr.type)
        lead = first.expr <= b0 if first.descending != reverse else first.expr >= b0
        pred = and_(lead, pred)
    return pred
