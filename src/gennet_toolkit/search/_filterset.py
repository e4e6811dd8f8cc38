"""FilterSet: declared, typed query-string filters compiled to a SQLAlchemy ``Select``."""

from __future__ import annotations

import decimal
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Select,
    SmallInteger,
    Table,
    and_,
    func,
    inspect,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import InstrumentedAttribute, RelationshipProperty

from gennet_toolkit._env import env_int
from gennet_toolkit.exceptions import ConfigurationError, FieldError
from gennet_toolkit.search._fulltext import Deferred, FullText, _Resolved, normalise_query
from gennet_toolkit.search._result import FilterResult, ParsedQuery, dialect_name, normal_value
from gennet_toolkit.search._values import (
    COMPARISON_OPERATORS,
    LIKE_OPERATORS,
    LIST_OPERATORS,
    OPERATORS,
    SUPPORTED_TYPES,
    BadValue,
    Field,
    InvalidFilter,
    escape_like,
    split_list,
    value_parser,
)

__all__ = ["FilterSet"]

_JSONAPI = re.compile(r"filter\[([^\[\]]+)\](?:\[([^\[\]]+)\])?")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,100}")
_SORT_KEY = re.compile(r"[+-]?[A-Za-z_][A-Za-z0-9_.]*")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_LIKE_ESCAPE = "/"
_DEFAULT_IGNORE = ("cursor", "page_size", "limit", "before", "after", "page[*")


def _safe_name(name: str) -> str | None:
    # Parameter names come from the client too: name them only when they are plain.
    return name if _SAFE_NAME.fullmatch(name) else None


@dataclass(frozen=True, slots=True)
class _Compiled:
    name: str
    ops: frozenset[str]
    sortable: bool
    parse: Callable[[str], object]
    column: ColumnElement[Any]
    relations: tuple[InstrumentedAttribute[Any], ...]
    uselist: tuple[bool, ...]
    is_text: bool


class FilterSet:
    """Declared filters, sorts and full-text search for one model, parsed from a query string.

    ``fields`` maps public names to :class:`Field` specs or just their operators
    (``{"weight": ["gte", "lte"], "symbol": "eq,in,icontains"}``); only what is declared
    can be filtered or sorted, anything else is a 400 :class:`InvalidFilter`.
    ``sortable`` lists more sortable names, ``searchable`` the text columns ``q=`` searches
    (or a :class:`FullText`). Caps: ``max_clauses`` filter clauses, ``max_in`` values per
    list, ``max_value_length`` characters per value, ``max_sort`` sort keys,
    ``max_search_length`` characters and ``max_search_terms`` terms of ``q``.
    ``ignore`` names parameters left for others (pagination); entries ending in ``*``
    match a prefix (``"page[*"``). ``default_sort`` applies when no ``sort`` is given (and
    no ``q``); the primary key is appended as a tiebreak unless ``tiebreak=False``.
    """

    def __init__(
        self,
        model: Any,
        fields: Mapping[str, Field | str | Iterable[str]] | None = None,
        *,
        sortable: Iterable[str] = (),
        searchable: Sequence[str] | FullText | None = None,
        default_sort: Sequence[str] = (),
        sort_param: str = "sort",
        search_param: str = "q",
        ignore: Iterable[str] = _DEFAULT_IGNORE,
        max_clauses: int = 20,
        max_in: int = 100,
        max_value_length: int = 256,
        max_sort: int = 5,
        max_search_length: int = 256,
        max_search_terms: int = 16,
        tiebreak: bool = True,
        dialect: str | None = None,
    ) -> None:
        if min(max_clauses, max_in, max_value_length, max_sort, max_search_length) < 1:
            raise ConfigurationError("search: every cap must be at least 1")
        self.model = model
        self.sort_param = sort_param
        self.search_param = search_param
        self.max_clauses = max_clauses
        self.max_in = max_in
        self.max_value_length = max_value_length
        self.max_sort = max_sort
        self.max_search_length = max_search_length
        self.max_search_terms = max_search_terms
        self.dialect = dialect
        ignored = tuple(ignore)
        self._ignore_exact = frozenset(i for i in ignored if not i.endswith("*"))
        self._ignore_prefix = tuple(i[:-1] for i in ignored if i.endswith("*"))
        extra_sortable = set(sortable)
        specs = {name: Field.coerce(spec) for name, spec in (fields or {}).items()}
        for name in extra_sortable - specs.keys():
            specs[name] = Field(ops=(), sortable=True)
        self._fields: dict[str, _Compiled] = {
            name: self._compile_field(name, spec, name in extra_sortable)
            for name, spec in specs.items()
        }
        self._fulltext: _Resolved | None = None
        if searchable is not None:
            spec_ft = (
                searchable if isinstance(searchable, FullText) else FullText(tuple(searchable))
            )
            self._fulltext = _Resolved(model, spec_ft)
        self._pk = self._primary_key() if tiebreak else []
        self._default_sort = self._parse_sort(",".join(default_sort), strict=True)
        self._identity = self._model_name()

    @classmethod
    def from_env(
        cls,
        model: Any,
        fields: Mapping[str, Field | str | Iterable[str]] | None = None,
        *,
        prefix: str = "GENNET_",
        **options: Any,
    ) -> FilterSet:
        """Build with caps from ``{prefix}SEARCH_MAX_CLAUSES``, ``_MAX_IN``,
        ``_MAX_VALUE_LENGTH``, ``_MAX_SORT`` and ``_MAX_SEARCH_LENGTH``; keywords win."""
        for key in ("max_clauses", "max_in", "max_value_length", "max_sort", "max_search_length"):
            if key not in options and (cap := env_int(f"{prefix}SEARCH_{key.upper()}")) is not None:
                options[key] = cap
        return cls(model, fields, **options)

    # ------------------------------------------------------------------ setup

    def _model_name(self) -> str:
        if isinstance(self.model, Table):
            return self.model.fullname
        return f"{self.model.__module__}.{self.model.__qualname__}"

    def _primary_key(self) -> list[ColumnElement[Any]]:
        if isinstance(self.model, Table):
            return list(self.model.primary_key.columns)
        mapper = inspect(self.model)
        return [
            getattr(self.model, mapper.get_property_by_column(c).key) for c in mapper.primary_key
        ]

    def _resolve(
        self, path: str
    ) -> tuple[ColumnElement[Any], tuple[InstrumentedAttribute[Any], ...], tuple[bool, ...]]:
        parts = path.split(".")
        if isinstance(self.model, Table):
            if len(parts) != 1 or parts[0] not in self.model.c:
                raise ConfigurationError(f"search: {self.model.name} has no column {path!r}")
            return self.model.c[parts[0]], (), ()
        cls, relations, uselist = self.model, [], []
        for part in parts[:-1]:
            rel = inspect(cls).relationships.get(part)
            if not isinstance(rel, RelationshipProperty):
                raise ConfigurationError(f"search: {path!r}: {part!r} is not a relationship")
            relations.append(getattr(cls, part))
            uselist.append(bool(rel.uselist))
            cls = rel.mapper.class_
        attr = getattr(cls, parts[-1], None)
        if attr is None or not isinstance(attr, ColumnElement | InstrumentedAttribute):
            raise ConfigurationError(f"search: {path!r} does not name a column")
        prop = getattr(attr, "property", None)
        if isinstance(prop, RelationshipProperty):
            raise ConfigurationError(f"search: {path!r} names a relationship, not a column")
        # The column clause itself: building expressions on it skips the ORM attribute
        # layers (a third of the compile time) and means the same SQL.
        clause = attr.__clause_element__() if hasattr(attr, "__clause_element__") else attr
        return cast("ColumnElement[Any]", clause), tuple(relations), tuple(uselist)

    def _compile_field(self, name: str, spec: Field, extra_sortable: bool) -> _Compiled:
        if not _FIELD_NAME.fullmatch(name) or "__" in name:
            raise ConfigurationError(f"search: field name {name!r} is not valid")
        unknown = set(spec.ops) - OPERATORS
        if unknown:
            raise ConfigurationError(f"search: {name}: unknown operators {sorted(unknown)}")
        column, relations, uselist = self._resolve(spec.path or name)
        sortable = spec.sortable or extra_sortable
        if sortable and relations:
            raise ConfigurationError(
                f"search: {name}: sorting through a relationship would need a join; "
                "sort by a column of the model itself"
            )
        sql_type = getattr(column, "type", None)
        py_type = spec.type if spec.type is not None else self._infer_type(name, sql_type)
        if spec.type is not None:
            self._check_declared_type(name, spec.type, sql_type)
        if not (
            py_type in SUPPORTED_TYPES
            or (isinstance(py_type, type) and issubclass(py_type, enum.Enum))
        ):
            raise ConfigurationError(f"search: {name}: unsupported type {py_type!r}")
        ops = frozenset(spec.ops)
        if ops & LIKE_OPERATORS and py_type is not str:
            raise ConfigurationError(f"search: {name}: contains/startswith need a str field")
        unordered = py_type in (bool, uuid.UUID) or issubclass(py_type, enum.Enum)
        if ops & COMPARISON_OPERATORS and unordered:
            raise ConfigurationError(f"search: {name}: {py_type.__name__} has no order")
        bits = 64
        if isinstance(sql_type, SmallInteger):
            bits = 16
        elif isinstance(sql_type, Integer) and not isinstance(sql_type, BigInteger):
            bits = 32  # PostgreSQL's integer; a wider value would fail in the driver
        timezone = bool(sql_type.timezone) if isinstance(sql_type, DateTime) else None
        parse = value_parser(
            py_type, max_length=self.max_value_length, int_bits=bits, timezone=timezone
        )
        return _Compiled(name, ops, sortable, parse, column, relations, uselist, py_type is str)

    @classmethod
    def _check_declared_type(cls, name: str, declared: Any, sql_type: Any) -> None:
        # A value of another type than the column's is a database error on PostgreSQL
        # (integer = varchar): refuse it here rather than answer requests with a 500.
        try:
            column_type = cls._infer_type(name, sql_type)
        except ConfigurationError:
            return  # a custom column type: trust the declaration
        numbers = (int, float, decimal.Decimal)
        if declared is column_type or (declared is int and column_type in numbers):
            return
        raise ConfigurationError(
            f"search: {name}: type {getattr(declared, '__name__', declared)} does not match "
            f"the column ({getattr(column_type, '__name__', column_type)})"
        )

    @staticmethod
    def _infer_type(name: str, sql_type: Any) -> Any:
        if isinstance(sql_type, SAEnum) and sql_type.enum_class is not None:
            return sql_type.enum_class
        if isinstance(sql_type, Boolean):
            return bool
        if isinstance(sql_type, Float):
            return float
        try:
            py_type = sql_type.python_type
        except (AttributeError, NotImplementedError):
            py_type = None
        if py_type in SUPPORTED_TYPES:
            return py_type
        raise ConfigurationError(f"search: {name}: cannot infer a value type, pass Field(type=…)")

    # ------------------------------------------------------------------ parsing

    def _ignored(self, name: str) -> bool:
        return name in self._ignore_exact or any(name.startswith(p) for p in self._ignore_prefix)

    def _split_name(self, name: str) -> tuple[str, str]:
        match = _JSONAPI.fullmatch(name)
        if match:
            return match.group(1), match.group(2) or "eq"
        field_name, sep, op = name.rpartition("__")
        if sep and op in OPERATORS:
            return field_name, op
        return name, "eq"

    def _parse_sort(self, raw: str, *, strict: bool = False) -> list[tuple[str, bool]]:
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if len(keys) > self.max_sort:
            raise BadValue("too_many_values", f"At most {self.max_sort} sort keys are allowed.")
        out: list[tuple[str, bool]] = []
        seen: set[str] = set()
        allowed = ", ".join(sorted(n for n, f in self._fields.items() if f.sortable))
        for position, key in enumerate(keys, 1):
            name = key.lstrip("+-")
            spec = self._fields.get(name) if _SORT_KEY.fullmatch(key) else None
            if spec is None or not spec.sortable:
                if strict:
                    raise ConfigurationError(f"search: default sort key {key!r} is not sortable")
                raise BadValue(
                    "not_sortable",
                    f"Sort key {position} is not a sortable field (sortable: {allowed or 'none'}).",
                )
            if name in seen:
                raise BadValue("duplicate_value", f"Sort key {position} repeats a field.")
            seen.add(name)
            out.append((name, key.startswith("-")))
        return out

    def _pairs(self, params: Any) -> list[tuple[str, str]]:
        if isinstance(params, str | bytes):
            text = params.decode("utf-8", "replace") if isinstance(params, bytes) else params
            return parse_qsl(text.lstrip("?"), keep_blank_values=True)
        if hasattr(params, "multi_items"):
            return [(str(k), str(v)) for k, v in params.multi_items()]
        if isinstance(params, Mapping):
            pairs: list[tuple[str, str]] = []
            for key, value in params.items():
                if isinstance(value, list | tuple):
                    pairs.extend((str(key), str(v)) for v in value)
                else:
                    pairs.append((str(key), str(value)))
            return pairs
        return [(str(k), str(v)) for k, v in params]

    def parse(self, params: Any) -> ParsedQuery:
        """Validate ``params`` (query string, mapping, Starlette ``QueryParams`` or pairs)."""
        pairs = self._pairs(params)
        # Bounded before any per-parameter work: a huge query string costs nothing.
        limit = self.max_clauses + 2 + len(self._ignore_exact) + 50
        if len(pairs) > limit:
            raise InvalidFilter(
                "Too many query parameters.",
                errors=[
                    FieldError(
                        "Too many query parameters.", location="query", code="too_many_clauses"
                    )
                ],
            )
        query = ParsedQuery()
        errors: list[FieldError] = []
        sort_raw: list[str] = []
        search_raw: list[str] = []
        raw_by_key: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for name, value in pairs:
            if name == self.sort_param:
                sort_raw.append(value)
            elif name == self.search_param and self._fulltext is not None:
                search_raw.append(value)
            elif self._ignored(name):
                continue
            else:
                field_name, op = self._split_name(name)
                spec = self._fields.get(field_name)
                if spec is None or not spec.ops:
                    errors.append(
                        FieldError(
                            "Unknown filter parameter.",
                            "query",
                            name=_safe_name(name),
                            code="unknown_filter",
                        )
                    )
                elif op not in spec.ops:
                    errors.append(
                        FieldError(
                            f"Operator not allowed here (allowed: {', '.join(sorted(spec.ops))}).",
                            "query",
                            name=_safe_name(name),
                            code="operator_not_allowed",
                        )
                    )
                else:
                    raw_by_key.setdefault((field_name, op), []).append((name, value))
        if len(raw_by_key) > self.max_clauses:
            errors.append(
                FieldError(
                    f"At most {self.max_clauses} filter clauses are allowed.",
                    "query",
                    code="too_many_clauses",
                )
            )
        else:
            for (field_name, op), raws in raw_by_key.items():
                spec = self._fields[field_name]
                try:
                    query.clauses[(field_name, op)] = self._values(spec, op, [v for _, v in raws])
                except BadValue as exc:
                    errors.append(exc.field_error(_safe_name(raws[0][0])))
        if sort_raw:
            try:
                query.sort = self._parse_sort(",".join(sort_raw))
            except BadValue as exc:
                errors.append(exc.field_error(self.sort_param))
        if search_raw:
            try:
                query.search = self._search_text(search_raw)
            except BadValue as exc:
                errors.append(exc.field_error(self.search_param))
        if errors:
            raise InvalidFilter(errors=errors)
        return query

    def _values(self, spec: _Compiled, op: str, raws: list[str]) -> list[object]:
        if op in LIST_OPERATORS:
            items: list[str] = []
            for raw in raws:
                if len(raw) > self.max_in * (self.max_value_length + 3):
                    raise BadValue("value_too_long", "The list is too long.")
                items.extend(split_list(raw, max_items=self.max_in))
            if len(items) > self.max_in:
                raise BadValue("too_many_values", f"At most {self.max_in} values are allowed.")
            parsed = [spec.parse(item) for item in items]
            # Sorted and unique: the same set of values gives the same query and fingerprint.
            unique = {normal_value(v): v for v in parsed}
            return [unique[k] for k in sorted(unique)]
        if len(raws) > 1:
            raise BadValue("duplicate_value", "The parameter is given more than once.")
        raw = raws[0]
        if op == "isnull":
            if len(raw) > 8:
                raise BadValue("invalid_value", "The value is not a boolean (true or false).")
            return [value_parser(bool, max_length=8)(raw)]
        if op == "between":
            if len(raw) > 2 * (self.max_value_length + 3):
                raise BadValue("value_too_long", "The range is too long.")
            bounds = split_list(raw, max_items=2)
            if len(bounds) != 2:
                raise BadValue("invalid_value", "between takes two values: low,high.")
            return [spec.parse(b) for b in bounds]
        return [spec.parse(raw)]

    def _search_text(self, raws: list[str]) -> str | None:
        if len(raws) > 1:
            raise BadValue("duplicate_value", "The parameter is given more than once.")
        raw = raws[0]
        if len(raw) > self.max_search_length:
            raise BadValue(
                "value_too_long", f"The search is longer than {self.max_search_length} characters."
            )
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise BadValue("invalid_value", "The search is not valid Unicode text.") from None
        text = normalise_query(raw)
        if len(text.split()) > self.max_search_terms:
            raise BadValue(
                "too_many_values", f"At most {self.max_search_terms} search terms are allowed."
            )
        return text or None

    # ------------------------------------------------------------------ compiling

    def _condition(
        self, spec: _Compiled, op: str, values: list[object], dialect: str | None
    ) -> ColumnElement[bool]:
        col = spec.column
        cond: ColumnElement[bool]
        if op in LIKE_OPERATORS:
            cond = self._like(col, op, str(values[0]), dialect)
        elif op == "eq":
            cond = col == values[0]
        elif op == "ne":
            cond = col != values[0]
        elif op == "lt":
            cond = col < values[0]
        elif op == "lte":
            cond = col <= values[0]
        elif op == "gt":
            cond = col > values[0]
        elif op == "gte":
            cond = col >= values[0]
        elif op == "in":
            cond = col.in_(values)
        elif op == "not_in":
            cond = col.not_in(values)
        elif op == "isnull":
            cond = col.is_(None) if values[0] else col.is_not(None)
        else:  # between
            cond = col.between(values[0], values[1])
        # Relations become EXISTS subqueries: a filter never multiplies rows.
        for rel, many in zip(reversed(spec.relations), reversed(spec.uselist), strict=True):
            cond = rel.any(cond) if many else rel.has(cond)
        return cond

    @staticmethod
    def _like(
        col: ColumnElement[Any], op: str, value: str, dialect: str | None
    ) -> ColumnElement[bool]:
        pattern = escape_like(value, _LIKE_ESCAPE)
        pattern = pattern + "%" if op == "startswith" else "%" + pattern + "%"
        if op == "icontains":
            return col.ilike(pattern, escape=_LIKE_ESCAPE)
        like = col.like(pattern, escape=_LIKE_ESCAPE)

        def build(name: str) -> ColumnElement[bool]:
            if name != "sqlite":
                return like
            # SQLite's LIKE ignores ASCII case; an exact check keeps contains case-sensitive.
            if op == "contains":
                return and_(like, func.instr(col, value) > 0)
            return and_(like, func.substr(col, 1, func.length(value)) == value)

        if dialect is not None:
            return build(dialect)
        return Deferred(build, Boolean())

    def apply(self, stmt: Select[Any], params: Any, *, dialect: Any = None) -> FilterResult:
        """Filter, search and order ``stmt`` by ``params``; raise :class:`InvalidFilter` (400).

        ``dialect`` is a name (``"sqlite"``, ``"postgresql"``) or anything with a
        ``.dialect`` or ``.bind`` (engine, connection, session); without one, the SQL for
        dialect-specific parts is chosen when the statement is compiled.
        """
        query = self.parse(params)
        name = dialect_name(dialect) or self.dialect
        conditions = [
            self._condition(self._fields[f], op, values, name)
            for (f, op), values in query.clauses.items()
        ]
        order_by: list[ColumnElement[Any]] = []
        fulltext = self._fulltext
        if query.search is not None and fulltext is not None:
            stmt, rank = fulltext.search(stmt, name, query.search)
            if not query.sort:
                order_by.append(rank.asc())
        sort = query.sort or ([] if query.search is not None else self._default_sort)
        for field_name, descending in sort:
            col = self._fields[field_name].column
            order_by.append(col.desc() if descending else col.asc())
        sorted_cols = [self._fields[f].column for f, _ in sort]
        for pk in self._pk:
            if not any(pk.shares_lineage(col) for col in sorted_cols):
                order_by.append(pk.asc())
        if conditions:
            stmt = stmt.where(*conditions)
        if order_by:
            stmt = stmt.order_by(*order_by)
        filters = tuple(
            sorted(
                (f, op, tuple(normal_value(v) for v in values))
                for (f, op), values in query.clauses.items()
            )
        )
        return FilterResult(
            select=stmt,
            order_by=order_by,
            fingerprint=self._fingerprint(filters, query.search),
            filters=filters,
            sort=tuple(("-" if d else "") + f for f, d in sort),
            search=query.search,
        )

    def _fingerprint(self, filters: tuple[Any, ...], search: str | None) -> str:
        canonical = json.dumps(
            {"model": self._identity, "filters": filters, "q": search},
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return "f1:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        """The declared filters, sortable fields and search, e.g. for OpenAPI or error help."""
        return {
            "filters": {n: sorted(f.ops) for n, f in self._fields.items() if f.ops},
            "sortable": sorted(n for n, f in self._fields.items() if f.sortable),
            "searchable": self._fulltext is not None,
        }
