"""Declared, typed filters, sorting and full-text search from query strings to SQLAlchemy.

:class:`FilterSet` turns ``weight__gte=0.5&symbol__in=lacZ,lacY&sort=-weight&q=repressor``
(or JSON:API ``filter[weight][gte]=0.5``) into a filtered and ordered ``Select``::

    genes = FilterSet(
        Gene,
        {"symbol": "eq,in,icontains", "weight": Field(ops=("gte",), sortable=True)},
        searchable=["symbol", "description"],
    )
    result = genes.apply(select(Gene), request.query_params)
    rows = session.scalars(result.select)

Only declared fields, operators and sort keys are accepted; anything else is a 400
:class:`InvalidFilter` naming the parameter, never echoing its value. Values are parsed by
type, LIKE wildcards are escaped, list sizes, lengths and clause counts are capped, and
relation paths (``regulator.symbol``) compile to EXISTS subqueries. Full-text search uses
SQLite FTS5 (quoted phrases, bm25) or PostgreSQL ``websearch_to_tsquery`` (GIN, ts_rank):
no input can cause a syntax error. Create the indexes with :func:`create_search_index`.
"""

from __future__ import annotations

from gennet_toolkit._optional import require

require("sqlalchemy", extra="sql", feature="gennet_toolkit.search")

from gennet_toolkit.search._filterset import FilterSet  # noqa: E402
from gennet_toolkit.search._fulltext import (  # noqa: E402
    FullText,
    create_search_index,
    fts5_query,
    postgres_search_ddl,
    sqlite_search_ddl,
)
from gennet_toolkit.search._result import FilterResult, ParsedQuery  # noqa: E402
from gennet_toolkit.search._values import OPERATORS, Field, InvalidFilter  # noqa: E402

__all__ = [
    "OPERATORS",
    "Field",
    "FilterResult",
    "FilterSet",
    "FullText",
    "InvalidFilter",
    "ParsedQuery",
    "create_search_index",
    "fts5_query",
    "postgres_search_ddl",
    "sqlite_search_ddl",
]
