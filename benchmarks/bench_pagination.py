"""pagination: keyset vs OFFSET at page N of 1M rows, and the cost of a signed cursor.

Suites:

- ``pagination-sqlite`` / ``pagination-postgres``: fetch page N (N = 1, 10, 100, 1,000,
  10,000; 50 rows a page) of a 1M-row table ordered by ``(score, id)`` with an index on
  ``(score, id)``, through ``CursorPaginator.paginate`` (keyset, cursor decoded, checked
  and re-encoded) and through a plain Core ``OFFSET … LIMIT 50`` query. Goal: keyset time
  flat in N (deepest/first under 1.5), while OFFSET grows with N.
- ``pagination-cursor``: one cursor encode + HMAC sign + verify + decode (2 sort keys;
  also with AES-GCM encryption), vs sqlakeyset's bookmark serialise + parse (unsigned
  plain text) and vs a bare json + base64 + HMAC baseline. Goal: under 20 µs.

The SQLite table lives in /tmp (reused between runs); on PostgreSQL (``DATABASE_URL``,
default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) the table is created with
``generate_series`` and dropped at the end. Without PostgreSQL only SQLite runs.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from benchmarks._harness import QUICK, Suite
from gennet_toolkit.pagination import CursorCodec, CursorPaginator

ROWS = 100_000 if QUICK else 1_000_000
PAGE = 50
PAGES = (1, 10, 100, 1_000) if QUICK else (1, 10, 100, 1_000, 10_000)
SQLITE_PATH = Path(f"/tmp/gennet_bench_pagination_{ROWS}.db")
PG_URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLE = "gennet_bench_pagination"
SECRET = "bench-secret-" + "s" * 24

meta = MetaData()
edges = Table(
    TABLE,
    meta,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("score", Integer, nullable=False),
    Column("payload", String(40), nullable=False),
)


def pg_available() -> bool:
    """Whether the benchmark PostgreSQL accepts connections."""
    parts = urlsplit(PG_URL.replace("+psycopg", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            return True
    except OSError:
        return False


def build_sqlite() -> Engine:
    """1M rows in a /tmp SQLite file via a recursive CTE (kept for the next run)."""
    engine = create_engine(f"sqlite:///{SQLITE_PATH}")
    with engine.begin() as conn:
        exists = conn.execute(
            text("SELECT count(*) FROM sqlite_master WHERE name = :n"), {"n": TABLE}
        ).scalar_one()
        if exists and conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar_one() == ROWS:
            return engine
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        meta.create_all(conn)
        conn.execute(
            text(
                f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {ROWS})"
                f" INSERT INTO {TABLE} (id, score, payload)"
                " SELECT i, (i * 7919) % 100000, hex(randomblob(16)) FROM g"
            )
        )
        conn.execute(text(f"CREATE INDEX ix_{TABLE}_score_id ON {TABLE} (score, id)"))
        conn.execute(text("ANALYZE"))
    return engine


def build_postgres() -> Engine:
    """1M rows on PostgreSQL with generate_series (dropped by :func:`main`)."""
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        meta.create_all(conn)
        conn.execute(
            text(
                f"INSERT INTO {TABLE} (id, score, payload)"
                " SELECT g, (g::bigint * 7919) % 100000, md5(g::text)"
                f" FROM generate_series(1, {ROWS}) g"
            )
        )
        conn.execute(text(f"CREATE INDEX ix_{TABLE}_score_id ON {TABLE} (score, id)"))
        conn.execute(text(f"ANALYZE {TABLE}"))
    return engine


def paging_suite(name: str, session: Session) -> Suite:
    """Keyset vs OFFSET at each page depth on one database."""
    suite = Suite(
        name,
        description=f"page N of {ROWS:,} rows, {PAGE} rows a page, ORDER BY score, id",
        rounds=9,
        target=0.03,
    )
    pager = CursorPaginator(order_by=[edges.c.score], page_size=PAGE, secret=SECRET)
    stmt = select(edges)
    ordered = select(edges.c.score, edges.c.id).order_by(edges.c.score, edges.c.id)
    for n in PAGES:
        skip = (n - 1) * PAGE
        cursor: str | None = None
        if n > 1:
            last = session.execute(ordered.offset(skip - 1).limit(1)).one()
            cursor = pager.cursor_for(stmt, tuple(last))

        def keyset(c: str | None = cursor) -> Any:
            return pager.paginate(session, stmt, c)

        def offset(k: int = skip) -> Any:
            # Built per call, as an endpoint does (the keyset case builds its query too).
            q = select(edges).order_by(edges.c.score, edges.c.id).offset(k).limit(PAGE)
            return session.execute(q).all()

        # The two must return the same rows, or the comparison means nothing.
        assert [r.id for r in keyset().items] == [r.id for r in offset()], n
        suite.add(f"keyset p{n}", keyset)
        suite.add(f"offset p{n}", offset)
        suite.compare(f"keyset p{n}", f"offset p{n}")
    suite.compare(f"keyset p{PAGES[-1]}", "keyset p1")
    suite.compare(f"offset p{PAGES[-1]}", "offset p1")
    return suite


def plan_note(session: Session) -> str:
    """The database's plan for the deepest keyset query: evidence that it seeks the index."""
    from gennet_toolkit.pagination._keyset import keyset_predicate, resolve_keys

    keys = resolve_keys(select(edges), [edges.c.score], None, "last")
    pred = keyset_predicate(keys, (99_990, 1), reverse=False, inclusive=False)
    q = select(edges).where(pred).order_by(edges.c.score, edges.c.id).limit(PAGE + 1)
    bind = session.get_bind()
    sql = str(q.compile(bind, compile_kwargs={"literal_binds": True}))
    if bind.dialect.name == "sqlite":
        rows = session.execute(text("EXPLAIN QUERY PLAN " + sql)).all()
        plan = "; ".join(str(r[-1]) for r in rows)
    else:
        rows = session.execute(text("EXPLAIN " + sql)).all()
        plan = "; ".join(str(r[0]).strip() for r in rows[:3])
    return f"keyset plan: {plan}"


def cursor_suite() -> Suite:
    """Encode + sign + verify + decode of one cursor, ours vs peers."""
    suite = Suite("pagination-cursor", description="one cursor round trip, 2 sort keys (int, str)")
    codec = CursorCodec(secret=SECRET)
    values = (48213, "GATA1")

    def ours() -> Any:
        return codec.decode(codec.encode(values, "a", "bound"), bound_to="bound", n_values=2)

    key = SECRET.encode()

    def baseline() -> Any:
        body = json.dumps([1, "a", list(values)], separators=(",", ":")).encode()
        tok = base64.urlsafe_b64encode(body + hmac.digest(key, body, "sha256")[:16]).decode()
        raw = base64.urlsafe_b64decode(tok)
        if not hmac.compare_digest(hmac.digest(key, raw[:-16], "sha256")[:16], raw[-16:]):
            raise ValueError("bad")
        return json.loads(raw[:-16])

    sealed = CursorCodec(secret=SECRET, encrypt=True)

    def ours_encrypted() -> Any:
        return sealed.decode(sealed.encode(values, "a", "bound"), bound_to="bound", n_values=2)

    suite.add("ours (signed, typed)", ours)
    suite.add("ours (AES-GCM encrypted)", ours_encrypted)
    suite.add("json+base64+hmac", baseline)
    suite.compare("ours (signed, typed)", "json+base64+hmac")
    try:
        from sqlakeyset import serialize_bookmark, unserialize_bookmark
    except ImportError:
        suite.note("sqlakeyset not installed: no bookmark comparison")
    else:

        def sqlakeyset_bookmark() -> Any:
            return unserialize_bookmark(serialize_bookmark((values, False)))

        suite.add("sqlakeyset bookmark (unsigned)", sqlakeyset_bookmark)
        suite.compare("ours (signed, typed)", "sqlakeyset bookmark (unsigned)")
    return suite


def _flatness(suite: Suite, prefix: str, *, best: bool = False) -> float:
    deep, first = suite.results[f"{prefix} p{PAGES[-1]}"], suite.results[f"{prefix} p1"]
    # Best rounds: least disturbed by other processes on a shared 2-core machine.
    return deep.low / first.low if best else deep.median / first.median


def main() -> None:
    """Build the tables, run every suite, drop the PostgreSQL table."""
    t0 = time.perf_counter()
    cursor_suite().run()
    engines: list[tuple[str, Engine]] = [("pagination-sqlite", build_sqlite())]
    pg: Engine | None = None
    if pg_available():
        pg = build_postgres()
        engines.append(("pagination-postgres", pg))
    else:
        print("PostgreSQL not reachable: skipping pagination-postgres")
    print(f"tables ready in {time.perf_counter() - t0:.1f} s")
    try:
        for name, engine in engines:
            # Closed before the DROP below: an open read transaction would block it.
            with Session(engine) as session:
                suite = paging_suite(name, session)
                suite.run(write=False)
                suite.note(plan_note(session))
            k, o = _flatness(suite, "keyset"), _flatness(suite, "offset")
            kb = _flatness(suite, "keyset", best=True)
            suite.note(
                f"deepest/first page time: keyset {k:.2f}x by median, {kb:.2f}x by best round "
                f"(goal < 1.5), OFFSET {o:.1f}x"
            )
            print(f"{name}: deepest/first keyset {k:.2f}x (best rounds {kb:.2f}x), OFFSET {o:.1f}x")
            suite.write()
    finally:
        if pg is not None:
            with pg.begin() as conn:
                conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
            pg.dispose()
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
