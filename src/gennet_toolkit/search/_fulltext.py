"""Full-text search on SQLite FTS5 and PostgreSQL tsvector, safe for any user input."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Double,
    Float,
    Integer,
    MetaData,
    Select,
    Table,
    bindparam,
    cast,
    func,
    inspect,
    literal_column,
    select,
)
from sqlalchemy import column as sa_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from gennet_toolkit.exceptions import ConfigurationError

__all__ = [
    "FullText",
    "create_search_index",
    "fts5_query",
    "postgres_search_ddl",
    "sqlite_search_ddl",
]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Control characters are never meaningful in a search and NUL breaks FTS5 parsing.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _ident(name: str, what: str) -> str:
    if not _IDENT.fullmatch(name):
        raise ConfigurationError(f"search: {what} {name!r} is not a plain SQL identifier")
    return f'"{name}"'


def normalise_query(text: str) -> str:
    """Collapse whitespace and drop control characters: the form that is searched."""
    return " ".join(_CONTROL.sub(" ", text).split())


def fts5_query(text: str) -> str:
    """Turn user text into an FTS5 query of quoted phrases (implicit AND), never a syntax error.

    Each whitespace-separated term becomes ``"term"`` with embedded quotes doubled, so
    ``AND``, ``NEAR``, ``*``, ``^``, ``:`` and parentheses are matched as text.
    """
    return " ".join('"' + term.replace('"', '""') + '"' for term in normalise_query(text).split())


def _table_of(model: Any) -> Table:
    if isinstance(model, Table):
        return model
    local = inspect(model).local_table
    if not isinstance(local, Table):
        raise ConfigurationError(f"search: {model!r} is not mapped to a table")
    return local


@dataclass(frozen=True, slots=True)
class FullText:
    """Which text columns ``q=`` searches, and how.

    ``columns`` are column names of the model's table. On SQLite they are indexed by an
    external-content FTS5 table ``fts_table`` (default ``<table>_fts``) kept in sync by
    triggers; on PostgreSQL by a GIN index on ``to_tsvector(config, …)``. Create both with
    :func:`create_search_index`. With ``vector_column`` set, PostgreSQL keeps the
    ``tsvector`` in a stored generated column of that name (created by the DDL helpers)
    and indexes it: ranking then reads the stored vector instead of re-parsing the text
    of every hit, several times faster for searches with many hits.
    """

    columns: tuple[str, ...]
    config: str = "english"
    fts_table: str | None = None
    tokenize: str = "unicode61 remove_diacritics 2"
    vector_column: str | None = None


class _Resolved:
    """A :class:`FullText` bound to one table, with the SQL pieces built once."""

    def __init__(self, model: Any, spec: FullText) -> None:
        self.table = _table_of(model)
        self.spec = spec
        if not spec.columns:
            raise ConfigurationError("search: searchable needs at least one column")
        _ident(self.table.name, "table")
        for name in spec.columns:
            _ident(name, "column")
            if name not in self.table.c:
                raise ConfigurationError(f"search: {self.table.name} has no column {name!r}")
        self.columns: list[Column[Any]] = [self.table.c[n] for n in spec.columns]
        pk = list(self.table.primary_key.columns)
        self.pk: Column[Any] | None = pk[0] if len(pk) == 1 else None
        if spec.vector_column is not None:
            _ident(spec.vector_column, "vector column")
        self.fts_name = spec.fts_table or f"{self.table.name}_fts"
        _ident(self.fts_name, "FTS table")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", spec.config):
            raise ConfigurationError(f"search: text search config {spec.config!r} is not valid")
        if not re.fullmatch(r"[A-Za-z0-9_ ]+", spec.tokenize):
            raise ConfigurationError("search: tokenize may hold letters, digits and spaces only")
        self.fts = Table(self.fts_name, MetaData(), Column("rowid", Integer, primary_key=True))
        self.fts_ref: ColumnElement[Any] = literal_column(f'"{self.fts_name}"')

    # SQLite ---------------------------------------------------------------

    def _rowid_column(self) -> Column[Any]:
        if self.pk is None:
            raise ConfigurationError(
                f"search: FTS5 needs a single integer primary key on {self.table.name}"
            )
        return self.pk

    def _sqlite(self, stmt: Select[Any], text: str) -> tuple[Select[Any], ColumnElement[Any]]:
        q: ColumnElement[Any] = bindparam(None, fts5_query(text), unique=True)
        # One row per match, joined on the rowid (1:1, never multiplying rows). bm25()
        # runs inside the MATCH query: as a correlated subquery per row it would
        # recompute the term statistics for every row (seconds at 50k rows).
        hits = (
            select(self.fts.c.rowid, func.bm25(self.fts_ref, type_=Float()).label("rank"))
            .where(self.fts_ref.op("MATCH")(q))
            .subquery(f"{self.fts_name}_hits")
        )
        # bm25() is lower-is-better already: ascending order puts the best first.
        return stmt.join(hits, hits.c.rowid == self._rowid_column()), hits.c.rank

    # PostgreSQL -----------------------------------------------------------

    def _document(self, columns: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
        # Literals, not bind parameters: the expression must equal the index expression.
        empty: ColumnElement[Any] = literal_column("''")
        space: ColumnElement[Any] = literal_column("' '")
        doc: ColumnElement[Any] = func.coalesce(columns[0], empty)
        for col in columns[1:]:
            doc = doc.op("||")(space).op("||")(func.coalesce(col, empty))
        return func.to_tsvector(literal_column(f"'{self.spec.config}'::regconfig"), doc)

    def _tsquery(self, text: str) -> ColumnElement[Any]:
        q: ColumnElement[Any] = bindparam(None, normalise_query(text), unique=True)
        return func.websearch_to_tsquery(literal_column(f"'{self.spec.config}'::regconfig"), q)

    def _vector(self) -> ColumnElement[Any]:
        name = self.spec.vector_column
        if name is None:
            return self._document(self.columns)
        if name in self.table.c:
            return self.table.c[name]
        from sqlalchemy.dialects.postgresql import TSVECTOR

        return sa_column(name, TSVECTOR(), _selectable=self.table)

    def postgres_match(self, text: str) -> ColumnElement[bool]:
        return self._vector().bool_op("@@")(self._tsquery(text))

    def postgres_rank(self, text: str) -> ColumnElement[Any]:
        # Negated so that ascending order puts the best first, as with bm25.
        # ts_rank is a real: widened to double so values round-trip exactly through
        # cursors (a float4 compared with its own float8 rendering is not equal).
        rank: ColumnElement[Any] = cast(func.ts_rank(self._vector(), self._tsquery(text)), Double())
        return -rank

    def search(
        self, stmt: Select[Any], dialect: str | None, text: str
    ) -> tuple[Select[Any], ColumnElement[Any]]:
        """``stmt`` restricted to rows matching ``text``, and the rank (lower is better)."""
        if dialect == "sqlite":
            return self._sqlite(stmt, text)
        if dialect == "postgresql":
            return stmt.where(self.postgres_match(text)), self.postgres_rank(text)
        if dialect is None:
            raise ConfigurationError(
                "search: full-text search needs the dialect: pass apply(..., dialect=session)"
                " or FilterSet(dialect=...)"
            )
        raise ConfigurationError(f"search: full-text search is not available on {dialect!r}")

    # DDL ------------------------------------------------------------------

    def sqlite_ddl(self) -> list[str]:
        pk = _ident(self._rowid_column().name, "column")
        fts, tbl = f'"{self.fts_name}"', f'"{self.table.name}"'
        cols = ", ".join(f'"{c}"' for c in self.spec.columns)
        new = ", ".join(f'new."{c}"' for c in self.spec.columns)
        old = ", ".join(f'old."{c}"' for c in self.spec.columns)
        delete = f"INSERT INTO {fts}({fts}, rowid, {cols}) VALUES ('delete', old.{pk}, {old});"
        insert = f"INSERT INTO {fts}(rowid, {cols}) VALUES (new.{pk}, {new});"
        name = self.fts_name
        return [
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5({cols}, "
            f"content='{self.table.name}', content_rowid='{self._rowid_column().name}', "
            f"tokenize='{self.spec.tokenize}')",
            f'CREATE TRIGGER IF NOT EXISTS "{name}_ai" AFTER INSERT ON {tbl} BEGIN {insert} END',
            f'CREATE TRIGGER IF NOT EXISTS "{name}_ad" AFTER DELETE ON {tbl} BEGIN {delete} END',
            f'CREATE TRIGGER IF NOT EXISTS "{name}_au" AFTER UPDATE ON {tbl} '
            f"BEGIN {delete} {insert} END",
            f"INSERT INTO {fts}({fts}) VALUES ('rebuild')",
        ]

    def postgres_ddl(self, index_name: str | None = None) -> list[str]:
        from sqlalchemy.dialects import postgresql

        default = f"ix_{self.table.name}_{self.spec.vector_column or 'fulltext'}"
        name = index_name or default
        _ident(name, "index")
        # Unqualified columns: an index expression names the table's own columns.
        doc = self._document([sa_column(c) for c in self.spec.columns])
        expr = str(doc.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
        tbl = f'"{self.table.name}"'
        if self.spec.vector_column is None:
            return [f'CREATE INDEX IF NOT EXISTS "{name}" ON {tbl} USING gin (({expr}))']
        vector = _ident(self.spec.vector_column, "vector column")
        return [
            f"ALTER TABLE {tbl} ADD COLUMN IF NOT EXISTS {vector} tsvector "
            f"GENERATED ALWAYS AS ({expr}) STORED",
            f'CREATE INDEX IF NOT EXISTS "{name}" ON {tbl} USING gin ({vector})',
        ]


def sqlite_search_ddl(model: Any, columns: Sequence[str], **options: Any) -> list[str]:
    """SQL creating the FTS5 table and sync triggers for ``model``'s ``columns`` (SQLite).

    The last statement rebuilds the index from existing rows; run the list in a
    migration or through :func:`create_search_index`. ``options`` are :class:`FullText`'s.
    """
    return _Resolved(model, FullText(tuple(columns), **options)).sqlite_ddl()


def postgres_search_ddl(
    model: Any, columns: Sequence[str], *, index_name: str | None = None, **options: Any
) -> list[str]:
    """SQL creating the GIN index on ``to_tsvector(config, columns…)`` (PostgreSQL)."""
    return _Resolved(model, FullText(tuple(columns), **options)).postgres_ddl(index_name)


def create_search_index(
    bind: Any, model: Any, columns: Sequence[str] | FullText, **options: Any
) -> None:
    """Create the full-text index for ``model`` on a sync ``Connection`` or ``Engine``.

    Chooses FTS5 or a GIN index from the connection's dialect; idempotent. With an async
    engine: ``await conn.run_sync(create_search_index, Gene, ["symbol", "description"])``.
    """
    from sqlalchemy import text
    from sqlalchemy.engine import Engine

    spec = columns if isinstance(columns, FullText) else FullText(tuple(columns), **options)
    resolved = _Resolved(model, spec)
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            create_search_index(conn, model, spec)
        return
    dialect = bind.dialect.name
    if dialect == "sqlite":
        statements = resolved.sqlite_ddl()
    elif dialect == "postgresql":
        statements = resolved.postgres_ddl()
    else:
        raise ConfigurationError(f"search: full-text search is not available on {dialect!r}")
    for statement in statements:
        bind.execute(text(statement))


class Deferred(ColumnElement[Any]):
    """An expression whose SQL is chosen when it is compiled, from the compiling dialect.

    Lets a :class:`~gennet_toolkit.search.FilterSet` build one ``Select`` that runs on
    SQLite and PostgreSQL alike when no dialect was given at ``apply()`` time.
    """

    inherit_cache = False

    def __init__(self, build: Callable[[str], ColumnElement[Any]], type_: Any) -> None:
        self._build = build
        self.type = type_

    def for_dialect(self, name: str) -> ColumnElement[Any]:
        """The concrete expression for dialect ``name``."""
        # str(stmt) compiles on the "default" dialect: show the PostgreSQL form there.
        return self._build("postgresql" if name == "default" else name)


@compiles(Deferred)
def _compile_deferred(element: Deferred, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.for_dialect(compiler.dialect.name), **kw)
