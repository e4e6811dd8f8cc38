"""CursorPaginator and Page: keyset paging of SQLAlchemy 2 selects, sync and async."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gennet_toolkit._env import env_bool, env_float, env_int, env_list, env_str
from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import BadRequest, ConfigurationError, FieldError
from gennet_toolkit.pagination._cursor import Cursor, CursorCodec, Direction, query_hash

if TYPE_CHECKING:
    from sqlalchemy import Select

    from gennet_toolkit.pagination._keyset import SortKey

__all__ = ["CursorPaginator", "InvalidPageSize", "InvalidSort", "Page", "link_header"]

T = TypeVar("T")
_DIGITS = re.compile(r"[0-9]{1,9}")
_MAX_SORT_TEXT = 1024  # longer sort text is refused before it is split


class InvalidPageSize(BadRequest):
    """``page_size`` is not an integer between 1 and the paginator's ``max_page_size``."""

    code = "invalid_page_size"
    title = "Invalid page size"


class InvalidSort(BadRequest):
    """A sort names a field that is not sortable, twice, or is malformed (400).

    The submitted text is never echoed: a sort on a hidden column must not become an
    oracle, and the answer must not reflect client input.
    """

    code = "invalid_sort"
    title = "Invalid sort"
    default_detail = "The sort parameter names a field that cannot be sorted on."


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of results.

    ``next_cursor`` / ``prev_cursor`` are ``None`` when there is no such page.
    ``start_cursor`` / ``end_cursor`` point before the first and after the last item
    whatever ``has_prev`` / ``has_next`` say (Relay ``pageInfo`` semantics). ``total``
    is filled only when the count was asked for.
    """

    items: list[T]
    next_cursor: str | None
    prev_cursor: str | None
    has_next: bool
    has_prev: bool
    total: int | None = None
    start_cursor: str | None = field(default=None, repr=False)
    end_cursor: str | None = field(default=None, repr=False)
    page_size: int = 0
    # Sort-key values per item and the encoder, for edges(): cursors made only on demand.
    _keys: list[tuple[Any, ...]] = field(default_factory=list, repr=False, compare=False)
    _encode: Callable[[Sequence[Any]], str] | None = field(default=None, repr=False, compare=False)

    def edges(self) -> list[tuple[str, T]]:
        """Relay ``edges``: ``(cursor, item)`` pairs; each cursor pages on *after* its item."""
        if self._encode is None:
            return []
        encode = self._encode
        return [(encode(k), item) for k, item in zip(self._keys, self.items, strict=True)]

    @property
    def page_info(self) -> dict[str, Any]:
        """Relay connection ``pageInfo``: hasNextPage, hasPreviousPage, startCursor, endCursor."""
        return {
            "hasNextPage": self.has_next,
            "hasPreviousPage": self.has_prev,
            "startCursor": self.start_cursor,
            "endCursor": self.end_cursor,
        }

    def link_header(self, base_url: str, *, param: str = "cursor") -> str:
        """RFC 8288 ``Link`` value with ``first``, and ``next``/``prev`` when they exist."""
        return link_header(self, base_url, param=param)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready envelope (items as they are: serialise them first if needed)."""
        out: dict[str, Any] = {
            "items": self.items,
            "next_cursor": self.next_cursor,
            "prev_cursor": self.prev_cursor,
            "has_next": self.has_next,
            "has_prev": self.has_prev,
            "page_info": self.page_info,
        }
        if self.total is not None:
            out["total"] = self.total
        return out


def _with_param(url: str, param: str, value: str | None) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    if value is not None:
        query.append((param, value))
    return urlunsplit(parts._replace(query=urlencode(query), fragment=""))


def link_header(page: Page[Any], request_url: str, *, param: str = "cursor") -> str:
    """The RFC 8288 ``Link`` header for ``page``: ``first``, and ``next``/``prev`` when
    they exist. Other query parameters of ``request_url`` (filters, page size) are kept."""
    links = [f'<{_with_param(request_url, param, None)}>; rel="first"']
    if page.next_cursor is not None:
        links.append(f'<{_with_param(request_url, param, page.next_cursor)}>; rel="next"')
    if page.prev_cursor is not None:
        links.append(f'<{_with_param(request_url, param, page.prev_cursor)}>; rel="prev"')
    return ", ".join(links)


@dataclass(slots=True)
class _Plan:
    stmt: Any
    keys: list[SortKey]
    bound: str
    cursor: Cursor | None
    size: int
    width: int
    scalar: bool
    positions: tuple[int, ...]  # where each key's value sits in a result row
    hidden: bool  # key columns were appended to the select (to be cut from the items)
    count_stmt: Any


def _is_entity(desc: Mapping[str, Any]) -> bool:
    expr = desc.get("expr")
    return expr is not None and expr is desc.get("entity")


def _positions(stmt: Any, keys: Sequence[SortKey], width: int) -> tuple[int, ...] | None:
    """Indexes of the sort keys among the selected columns, if every key is selected."""
    cols = list(stmt.selected_columns)
    if len(cols) != width:  # an ORM entity among the columns: rows are not flat
        return None
    plain = [c._deannotate() if hasattr(c, "_deannotate") else c for c in cols]
    out = []
    for k in keys:
        target = k.expr._deannotate() if hasattr(k.expr, "_deannotate") else k.expr
        idx = next((i for i, c in enumerate(plain) if c is target), None)
        if idx is None:
            return None
        out.append(idx)
    return tuple(out)


def _sortable_map(sortable: Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``sortable`` as public name -> sort target (a selected column's name or a column)."""
    if sortable is None:
        return None
    if isinstance(sortable, str | bytes):
        raise ConfigurationError('sortable= takes a collection of names: {"name", ...}')
    pairs = list(sortable.items()) if isinstance(sortable, Mapping) else [(n, n) for n in sortable]
    out: dict[str, Any] = {}
    for name, target in pairs:
        if not isinstance(name, str) or not name or name[:1] in "-+" or "," in name:
            raise ConfigurationError(f"bad sortable name {name!r}: a non-empty plain name")
        if name != name.strip():
            raise ConfigurationError(f"bad sortable name {name!r}: surrounding whitespace")
        out[name] = target
    return out


def _dialect_name(session: Any) -> str:
    bind = session.get_bind() if hasattr(session, "get_bind") else session
    dialect = getattr(bind, "dialect", None)
    return str(getattr(dialect, "name", ""))


class CursorPaginator:
    """Keyset (seek) pagination for SQLAlchemy 2 ``Select`` statements.

    ``order_by`` lists sort keys (columns, ``.desc()``, ``.nulls_first()``, or selected
    column names like ``"-score"``); the primary keys of the selected tables are appended
    as a unique tiebreak unless ``tiebreak=`` names the columns. ``nulls`` places NULLs
    (``"last"`` or ``"first"``) for keys that do not say, identically on every database.
    Cursors are signed with ``secret`` (a list rotates keys) or, with ``encrypt=True``,
    sealed with AES-GCM so sort-key values stay unreadable; they expire after ``max_age``
    seconds when set and are bound to ``name``, the sort and the filter ``fingerprint``.

    ``sortable`` is the allowlist for sorts that may come from a client: a per-call
    ``sort="-created_at,name"`` (or string names in a per-call ``order_by``) may name only
    these keys, anything else is a 400 :class:`InvalidSort`; a set of selected column
    names, or a mapping from public name to a column or SQL expression. Without it,
    client sorts are refused with :class:`ConfigurationError`, so a hidden column
    (``-password_hash``) can never become a sort oracle. The constructor's ``order_by``
    is the developer's and is not checked against it.
    """

    def __init__(
        self,
        order_by: Sequence[Any] = (),
        *,
        page_size: int = 50,
        max_page_size: int = 500,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        tiebreak: Sequence[Any] | None = None,
        nulls: Literal["first", "last"] = "last",
        max_age: float | None = None,
        name: str = "",
        include_total: bool = False,
        cursor_param: str = "cursor",
        size_param: str = "page_size",
        max_cursor_length: int = 2048,
        encrypt: bool = False,
        sortable: Iterable[str] | Mapping[str, Any] | None = None,
        sort_param: str = "sort",
    ) -> None:
        if not 1 <= page_size <= max_page_size:
            raise ConfigurationError("need 1 <= page_size <= max_page_size")
        if nulls not in ("first", "last"):
            raise ConfigurationError('nulls must be "first" or "last"')
        self.order_by = tuple(order_by)
        self.tiebreak = None if tiebreak is None else tuple(tiebreak)
        self.page_size = page_size
        self.max_page_size = max_page_size
        self.nulls: Literal["first", "last"] = nulls
        self.name = name
        self.include_total = include_total
        self.cursor_param = cursor_param
        self.size_param = size_param
        self.sort_param = sort_param
        self.sortable = _sortable_map(sortable)
        self.codec = CursorCodec(
            secret=secret,
            max_age=max_age,
            max_length=max_cursor_length,
            param=cursor_param,
            encrypt=encrypt,
        )

    @classmethod
    def from_env(cls, prefix: str = "GENNET_", **overrides: Any) -> CursorPaginator:
        """Configure from ``{prefix}PAGINATION_PAGE_SIZE``, ``…_MAX_PAGE_SIZE``,
        ``…_SECRET`` (comma-separated: the first signs, all verify), ``…_ENCRYPT``
        (``1``/``true``), ``…_MAX_AGE`` (seconds), ``…_NULLS`` and ``…_SORTABLE``
        (comma-separated names); keyword ``overrides`` (``order_by=`` …) win."""
        p = f"{prefix}PAGINATION_"
        kwargs: dict[str, Any] = {}
        if (size := env_int(p + "PAGE_SIZE")) is not None:
            kwargs["page_size"] = size
        if (size := env_int(p + "MAX_PAGE_SIZE")) is not None:
            kwargs["max_page_size"] = size
        if (age := env_float(p + "MAX_AGE")) is not None:
            kwargs["max_age"] = age
        if secrets := env_list(p + "SECRET"):
            kwargs["secret"] = secrets
        if env_bool(p + "ENCRYPT", False):
            kwargs["encrypt"] = True
        if nulls := env_str(p + "NULLS"):
            kwargs["nulls"] = nulls
        if sortable := env_list(p + "SORTABLE"):
            kwargs["sortable"] = sortable
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ request helpers

    def check_page_size(self, page_size: int | str | None) -> int:
        """The page size to use: the default for ``None``, else 1..max_page_size or a 400."""
        if page_size is None:
            return self.page_size
        if isinstance(page_size, str):
            if not _DIGITS.fullmatch(page_size.strip()):
                raise self._bad_size()
            page_size = int(page_size)
        if isinstance(page_size, bool) or not isinstance(page_size, int):
            raise self._bad_size()
        if not 1 <= page_size <= self.max_page_size:
            raise self._bad_size()
        return page_size

    def _bad_size(self) -> InvalidPageSize:
        detail = f"{self.size_param} must be an integer from 1 to {self.max_page_size}."
        return InvalidPageSize(
            detail, errors=[FieldError(detail, location="query", name=self.size_param)]
        )

    def query_args(self, params: Mapping[str, str]) -> tuple[str | None, int]:
        """``(cursor, page_size)`` read from query parameters, page size checked."""
        cursor = params.get(self.cursor_param) or None
        return cursor, self.check_page_size(params.get(self.size_param))

    def check_sort(self, sort: str) -> list[tuple[str, bool]]:
        """``(name, descending)`` terms of a client sort like ``"-created_at,name"``.

        Each name must be in ``sortable`` and appear once; anything else is a 400
        :class:`InvalidSort` that does not echo the text. Without ``sortable`` this is a
        :class:`ConfigurationError`: client sorts need an explicit allowlist.
        """
        allowed = self._allowlist()
        if len(sort) > _MAX_SORT_TEXT:
            raise self._bad_sort()
        terms: list[tuple[str, bool]] = []
        seen: set[str] = set()
        for raw in sort.split(","):
            term = raw.strip()
            descending = term[:1] == "-"
            name = term[1:] if term[:1] in "-+" else term
            if name not in allowed or name in seen:
                raise self._bad_sort()
            seen.add(name)
            terms.append((name, descending))
        return terms

    def _allowlist(self) -> dict[str, Any]:
        if self.sortable is None:
            raise ConfigurationError(
                "a sort passed per call may come from a client: declare the sortable keys "
                'with CursorPaginator(sortable={"name", ...}) so hidden columns cannot be '
                "sorted on"
            )
        return self.sortable

    def _bad_sort(self) -> InvalidSort:
        names = ", ".join(sorted(self.sortable or ()))
        detail = (
            f"{self.sort_param} may name only these fields, each once, comma-separated, "
            f"with - for descending: {names}."
            if names
            else f"{self.sort_param} is not accepted here."
        )
        return InvalidSort(
            detail,
            errors=[
                FieldError(detail, location="query", name=self.sort_param, code="invalid_sort")
            ],
        )

    def _sort_term(self, stmt: Select[Any], name: str, descending: bool) -> Any:
        target = self._allowlist()[name]
        if isinstance(target, str):
            col = stmt.selected_columns.get(target)
            if col is None:
                raise ConfigurationError(
                    f"sortable key {name!r} is not a selected column of the statement; map it "
                    "to a column: sortable={name: Model.column}"
                )
            target = col
        return target.desc() if descending else target

    def _order_for(
        self, stmt: Select[Any], order_by: Sequence[Any] | None, sort: str | None
    ) -> Sequence[Any]:
        """The sort for one call: the client ``sort`` text, a per-call ``order_by`` (its
        string names checked against ``sortable``), or the constructor's ``order_by``."""
        if sort is not None:
            if order_by is not None:
                raise ConfigurationError("pass sort= (client text) or order_by=, not both")
            terms = self.check_sort(sort) if sort.strip() else []
            if not terms:
                self._allowlist()  # an empty sort still needs the allowlist declared
                return self.order_by
            return [self._sort_term(stmt, n, d) for n, d in terms]
        if order_by is None:
            return self.order_by
        out: list[Any] = []
        for item in order_by:
            if isinstance(item, str):
                # Strings given per call are treated as client input: allowlist only.
                descending = item[:1] == "-"
                name = item[1:] if item[:1] in "-+" else item
                if name not in self._allowlist():
                    raise self._bad_sort()
                out.append(self._sort_term(stmt, name, descending))
            else:
                out.append(item)
        return out

    def cursor_for(
        self,
        stmt: Select[Any],
        values: Sequence[Any],
        *,
        direction: Direction = "a",
        fingerprint: str | None = None,
        order_by: Sequence[Any] | None = None,
        sort: str | None = None,
    ) -> str:
        """A cursor at explicit sort-key values (the order keys, then the tiebreak), e.g.
        a per-item Relay edge cursor; ``direction`` ``"a"`` pages after it, ``"b"`` before."""
        require("sqlalchemy", extra="sql", feature="gennet_toolkit.pagination")
        from gennet_toolkit.pagination._keyset import resolve_keys, spec_text

        keys = resolve_keys(stmt, self._order_for(stmt, order_by, sort), self.tiebreak, self.nulls)
        if len(values) != len(keys):
            raise ValueError(f"need {len(keys)} values (sort keys then tiebreak)")
        bound = query_hash(self.name, spec_text(keys), fingerprint or "")
        return self.codec.encode(values, direction, bound)

    # ------------------------------------------------------------------ paging

    def _plan(
        self,
        stmt: Select[Any],
        *,
        cursor: str | None,
        page_size: int | str | None,
        fingerprint: str | None,
        order_by: Sequence[Any] | None,
        sort: str | None,
        include_total: bool | None,
        dialect: str,
    ) -> _Plan:
        require("sqlalchemy", extra="sql", feature="gennet_toolkit.pagination")
        from sqlalchemy import func, select

        from gennet_toolkit.pagination._keyset import keyset_predicate, resolve_keys, spec_text

        size = self.check_page_size(page_size)
        keys = resolve_keys(stmt, self._order_for(stmt, order_by, sort), self.tiebreak, self.nulls)
        bound = query_hash(self.name, spec_text(keys), fingerprint or "")
        decoded = None
        base = stmt.order_by(None)
        descs = stmt.column_descriptions
        width = len(descs)
        scalar = width == 1 and _is_entity(descs[0])
        positions = None if scalar else _positions(stmt, keys, width)
        hidden = positions is None
        if positions is None:
            # Sort keys not in the row (or an entity row): select them under private labels.
            q = base.add_columns(*(k.expr.label(f"_gn_key{i}") for i, k in enumerate(keys)))
            positions = tuple(range(width, width + len(keys)))
        else:
            q = base
        reverse = False
        if cursor is not None:
            decoded = self.codec.decode(cursor, bound_to=bound, n_values=len(keys))
            if not all(k.accepts(v, dialect) for k, v in zip(keys, decoded.values, strict=True)):
                raise self.codec.error("mismatch")
            reverse = decoded.direction in ("b", "B")
            q = q.where(
                keyset_predicate(
                    keys, decoded.values, reverse=reverse, inclusive=decoded.direction.isupper()
                )
            )
        q = q.order_by(*(k.order_clause(reverse) for k in keys)).limit(size + 1)
        total = self.include_total if include_total is None else include_total
        count_stmt = select(func.count()).select_from(base.subquery()) if total else None
        return _Plan(q, keys, bound, decoded, size, width, scalar, positions, hidden, count_stmt)

    def _finish(self, plan: _Plan, result: Any, total: int | None) -> Page[Any]:
        rows: list[Any]
        items: list[Any]
        if plan.scalar:
            rows = list(result.unique().all())  # unique(): joined eager loads need it
            items = [r[0] for r in rows]
        elif plan.hidden:
            frozen = result.freeze()  # two views of one result: full rows, trimmed rows
            rows = list(frozen().all())
            items = list(frozen().columns(*range(plan.width)).all())
        else:
            rows = list(result.all())
            items = list(rows)
        size = plan.size
        more = len(rows) > size
        del rows[size:], items[size:]
        cur = plan.cursor
        backward = cur is not None and cur.direction in ("b", "B")
        if backward:
            rows.reverse()
            items.reverse()
        encode = self.codec.encode
        pos = plan.positions
        start = encode([rows[0][i] for i in pos], "b", plan.bound) if rows else None
        end = encode([rows[-1][i] for i in pos], "a", plan.bound) if rows else None
        if backward:
            has_prev, has_next = more, True
        else:
            has_prev, has_next = cur is not None, more
        next_cursor = end if has_next else None
        prev_cursor = start if has_prev else None
        if not rows and cur is not None:
            # An empty page still leads back to where the client came from, keeping the
            # row at the cursor position itself (inclusive directions).
            if backward:
                next_cursor = encode(cur.values, "A", plan.bound)
            else:
                prev_cursor = encode(cur.values, "B", plan.bound)
        return Page(
            items=items,
            next_cursor=next_cursor,
            prev_cursor=prev_cursor,
            has_next=has_next,
            has_prev=has_prev,
            total=total,
            start_cursor=start,
            end_cursor=end,
            page_size=size,
            _keys=[tuple(r[i] for i in pos) for r in rows],
            _encode=lambda values: encode(values, "a", plan.bound),
        )

    def paginate(
        self,
        session: Any,
        stmt: Select[Any],
        cursor: str | None = None,
        page_size: int | str | None = None,
        *,
        fingerprint: str | None = None,
        order_by: Sequence[Any] | None = None,
        sort: str | None = None,
        include_total: bool | None = None,
    ) -> Page[Any]:
        """Run one page of ``stmt`` on a sync ``Session`` or ``Connection``.

        ORM selects of one entity give entities as items, other selects give rows.
        ``fingerprint`` (the applied filters, e.g. from ``search.FilterSet``) binds the
        cursor to them; ``order_by`` replaces the paginator's sort for this call, and
        ``sort`` (client text such as ``"-created_at,name"``, checked against
        ``sortable``) does too; an empty ``sort`` keeps the default. A bad cursor, page
        size or sort raises :class:`InvalidCursor` / :class:`InvalidPageSize` /
        :class:`InvalidSort` (400).
        """
        plan = self._plan(
            stmt,
            cursor=cursor,
            page_size=page_size,
            fingerprint=fingerprint,
            order_by=order_by,
            sort=sort,
            include_total=include_total,
            dialect=_dialect_name(session),
        )
        result = session.execute(plan.stmt)
        page = self._finish(plan, result, None)
        if plan.count_stmt is not None:
            page.total = int(session.execute(plan.count_stmt).scalar_one())
        return page

    async def apaginate(
        self,
        session: Any,
        stmt: Select[Any],
        cursor: str | None = None,
        page_size: int | str | None = None,
        *,
        fingerprint: str | None = None,
        order_by: Sequence[Any] | None = None,
        sort: str | None = None,
        include_total: bool | None = None,
    ) -> Page[Any]:
        """:meth:`paginate` for an ``AsyncSession`` or ``AsyncConnection``."""
        plan = self._plan(
            stmt,
            cursor=cursor,
            page_size=page_size,
            fingerprint=fingerprint,
            order_by=order_by,
            sort=sort,
            include_total=include_total,
            dialect=_dialect_name(session),
        )
        result = await session.execute(plan.stmt)
        page = self._finish(plan, result, None)
        if plan.count_stmt is not None:
            page.total = int((await session.execute(plan.count_stmt)).scalar_one())
        return page
