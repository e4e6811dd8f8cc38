"""search: parse + compile cost of a 5-clause query, and full-text query time.

1. ``filter-compile``: one typical query string (five filter clauses and a two-key sort)
   turned into a SQLAlchemy ``Select`` by our ``FilterSet``, by fastapi-filter 3 (a
   pydantic model validated from the same parameters), and by hand (the ``Select``
   written directly from already-typed values: the floor). Statements are built, not
   executed.
2. ``fulltext``: ``q=`` over 50,000 gene descriptions, top 50 by rank, on SQLite FTS5
   (bm25) and PostgreSQL (GIN + websearch_to_tsquery + ts_rank; on the expression and
   on a stored generated ``tsvector`` column), next to an escaped ``icontains`` LIKE
   scan on each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import DateTime, Float, Integer, String, Text, create_engine, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks._harness import Suite
from gennet_toolkit.search import Field, FilterSet, FullText, create_search_index

ROWS = 50_000
STORED = FullText(("symbol", "description"), vector_column="search_vector")
QUERY = (
    "weight__gte=0.5&symbol__in=lacZ,lacY,lacI&kind=tf"
    "&created_at__gte=2024-01-02T00:00:00&symbol__icontains=lac&sort=-weight,symbol"
)


class Base(DeclarativeBase):
    pass


class Gene(Base):
    __tablename__ = "bench_genes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    weight: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


# --------------------------------------------------------------------------- compile


def filter_suite() -> Suite:
    from urllib.parse import parse_qsl

    from fastapi_filter.contrib.sqlalchemy import Filter
    from starlette.datastructures import QueryParams

    fs = FilterSet(
        Gene,
        {
            "symbol": Field(ops=("in", "icontains"), sortable=True),
            "weight": Field(ops=("gte",), sortable=True),
            "kind": "eq",
            "created_at": "gte",
        },
    )

    class GeneFilter(Filter):
        symbol__in: list[str] | None = None
        symbol__ilike: str | None = None
        weight__gte: float | None = None
        kind: str | None = None
        created_at__gte: dt.datetime | None = None
        order_by: list[str] | None = None

        class Constants(Filter.Constants):
            model = Gene

    params = QueryParams(QUERY)
    peer_params = dict(parse_qsl(QUERY.replace("symbol__icontains=lac", "symbol__ilike=%lac%")))
    peer_params["order_by"] = peer_params.pop("sort")

    def ours() -> Any:
        return fs.apply(select(Gene), params, dialect="sqlite").select

    def fastapi_filter() -> Any:
        f = GeneFilter.model_validate(peer_params)
        return f.sort(f.filter(select(Gene)))

    since = dt.datetime(2024, 1, 2)

    def by_hand() -> Any:
        return (
            select(Gene)
            .where(
                Gene.weight >= 0.5,
                Gene.symbol.in_(["lacI", "lacY", "lacZ"]),
                Gene.kind == "tf",
                Gene.created_at >= since,
                Gene.symbol.ilike("%lac%", escape="/"),
            )
            .order_by(Gene.weight.desc(), Gene.symbol.asc(), Gene.id.asc())
        )

    suite = Suite(
        "search-filter-compile",
        description="query string with 5 filter clauses + 2 sort keys -> Select (not executed)",
    )
    suite.add("ours", ours)
    suite.add("fastapi-filter", fastapi_filter)
    suite.add("hand-written", by_hand)
    suite.compare("ours", "fastapi-filter")
    suite.compare("ours", "hand-written")
    suite.note(
        "fastapi-filter validates and sorts by any model attribute and leaves LIKE "
        "wildcards unescaped; ours checks the allowlist, escapes and caps."
    )
    return suite


# --------------------------------------------------------------------------- full text

WORDS = [
    "transcription",
    "factor",
    "repressor",
    "activator",
    "binding",
    "domain",
    "operon",
    "promoter",
    "kinase",
    "membrane",
    "transport",
    "protein",
    "regulator",
    "sigma",
    "ribosomal",
    "subunit",
    "lactose",
    "arabinose",
    "galactose",
    "permease",
    "synthase",
    "reductase",
    "oxidase",
    "helix",
    "turn",
    "dna",
    "rna",
    "polymerase",
    "chaperone",
    "heat",
    "shock",
    "cold",
    "stress",
    "response",
    "flagellar",
    "motility",
    "chemotaxis",
    "biofilm",
]


def rows(n: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(42)
    base = dt.datetime(2024, 1, 1)
    for i in range(1, n + 1):
        yield {
            "id": i,
            "symbol": f"g{i:05d}",
            "kind": "tf" if i % 7 == 0 else "gene",
            "description": " ".join(rng.choices(WORDS, k=rng.randint(6, 18))),
            "weight": rng.random(),
            "created_at": base + dt.timedelta(minutes=i),
        }


def load(engine: Engine) -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    data = list(rows(ROWS))
    with engine.begin() as conn:
        for start in range(0, len(data), 5000):
            conn.execute(insert(Gene), data[start : start + 5000])
        create_search_index(conn, Gene, ["symbol", "description"])
        if engine.dialect.name == "postgresql":
            create_search_index(conn, Gene, STORED)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE bench_genes")
            conn.commit()


@contextlib.contextmanager
def postgres_engine() -> Iterator[Engine | None]:
    url = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/postgres")
    try:
        import psycopg

        admin = url.replace("postgresql+psycopg", "postgresql")
        name = f"gnbench_search_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"PostgreSQL unavailable ({type(exc).__name__}); skipping its cases")
        yield None
        return
    base = admin.rsplit("/", 1)[0]
    engine = create_engine(f"{base.replace('postgresql', 'postgresql+psycopg', 1)}/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query_case(
    engine: Engine, params: dict[str, str], searchable: Any = ("symbol", "description")
) -> Callable[[], Any]:
    fs = FilterSet(Gene, {"description": "icontains"}, searchable=searchable)
    stmt = fs.apply(select(Gene.id), params, dialect=engine).select.limit(50)

    def run() -> Any:
        with engine.connect() as conn:
            return conn.execute(stmt).all()

    return run


def fulltext_suite(sqlite: Engine, postgres: Engine | None) -> Suite:
    suite = Suite(
        "search-fulltext",
        description=f"q= over {ROWS:,} gene descriptions, top 50 by rank (one query per call)",
        rounds=9,
    )
    search = {"q": "chaperone biofilm"}
    like = {"description__icontains": "chaperone"}
    suite.add("sqlite-fts5", query_case(sqlite, search))
    suite.add("sqlite-like", query_case(sqlite, like))
    if postgres is not None:
        suite.add("postgres-gin", query_case(postgres, search))
        suite.add("postgres-gin-stored", query_case(postgres, search, STORED))
        suite.add("postgres-ilike", query_case(postgres, like))
        suite.compare("sqlite-fts5", "postgres-gin")
        suite.compare("sqlite-fts5", "postgres-gin-stored")
        suite.compare("postgres-gin-stored", "postgres-gin")
        suite.compare("postgres-gin", "postgres-ilike")
    suite.compare("sqlite-fts5", "sqlite-like")
    fs = FilterSet(Gene, {}, searchable=["symbol", "description"])
    with sqlite.connect() as conn:
        hits = len(conn.execute(fs.apply(select(Gene.id), search, dialect=sqlite).select).all())
    suite.note(f"'chaperone biofilm' matches {hits} rows, all ranked before the LIMIT")
    suite.note("the LIKE cases are unranked and stop after 50 hits: a floor, not a peer")
    return suite


def main() -> None:
    filter_suite().run()
    with tempfile.TemporaryDirectory() as tmp, postgres_engine() as pg:
        sqlite = create_engine(f"sqlite:///{tmp}/bench.db")
        load(sqlite)
        if pg is not None:
            load(pg)
        fulltext_suite(sqlite, pg).run()
        sqlite.dispose()


if __name__ == "__main__":
    main()
