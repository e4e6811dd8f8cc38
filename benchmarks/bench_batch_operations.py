"""batch_operations: 10k-row batch inserts, ours (atomic and per-item) vs raw executemany
and a naive per-row SAVEPOINT loop, on SQLite and PostgreSQL.

Suites, per database:

- ``batch-create-10k-<db>``: one call inserts 10,000 edges (source, target, weight;
  unique (source, target); server-generated id) in one transaction. Cases: raw
  ``session.execute(insert(Model), rows)`` (the baseline), ours atomic, ours per-item at
  0%, 1% and 10% conflicts (items whose key already exists), and ours atomic at 1%
  conflicts (rejected: nothing written, every failing index found).
- ``batch-naive-1k-<db>``: the per-row SAVEPOINT loop is ~100x slower, so it is
  compared on 1,000-row batches: ours per-item vs the loop, both at 1% conflicts.

Every batch carries fresh keys (the tables grow across rounds, equally for all cases).
On PostgreSQL ours sends each chunk as ``INSERT … SELECT FROM unnest(arrays)``; the raw
baseline is SQLAlchemy's executemany (psycopg 3 pipelined).
SQLite is a file in a temporary directory; PostgreSQL is ``DATABASE_URL`` (default
``postgresql://127.0.0.1:5432/test``), with tables of our own, dropped at the end.
"""

from __future__ import annotations

import itertools
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from benchmarks._harness import QUICK, Suite
from gennet_toolkit.batch_operations import BatchProcessor

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
TAG = uuid.uuid4().hex[:8]
ROWS = 10_000
ROUNDS = 3 if QUICK else 11


class Base(DeclarativeBase):
    pass


class Edge(Base):
    __tablename__ = f"bench_batch_edges_{TAG}"
    id: Mapped[int] = mapped_column(primary_key=True)
    src: Mapped[str] = mapped_column(sa.String(32))
    tgt: Mapped[str] = mapped_column(sa.String(32))
    weight: Mapped[float] = mapped_column(sa.Float)
    __table_args__ = (sa.UniqueConstraint("src", "tgt"),)


_serial = itertools.count()
EXISTING = [{"src": "old", "tgt": f"t{i}", "weight": 0.5} for i in range(1_000)]


def batch(size: int, conflict_pct: float) -> list[dict[str, Any]]:
    """``size`` edges with fresh keys, of which ``conflict_pct`` % already exist."""
    n_conflicts = int(size * conflict_pct / 100)
    step = size // n_conflicts if n_conflicts else 0
    rows: list[dict[str, Any]] = []
    for i in range(size):
        if step and i % step == 0 and len(rows) // step < n_conflicts:
            rows.append(dict(EXISTING[(i // step) % len(EXISTING)]))
        else:
            rows.append({"src": f"s{next(_serial)}", "tgt": f"t{i}", "weight": 0.25})
    return rows


def batches(size: int, conflict_pct: float) -> Iterator[list[dict[str, Any]]]:
    while True:
        yield batch(size, conflict_pct)


def postgres_available() -> bool:
    parts = urlsplit(DATABASE_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            return True
    except OSError:
        return False


def naive_loop(factory: sessionmaker[Session], rows: list[dict[str, Any]]) -> int:
    """What per-item results cost without set-based checks: a SAVEPOINT per row."""
    written = 0
    with factory() as session:
        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(sa.insert(Edge).values(**row))
                written += 1
            except sa_exc.IntegrityError:
                pass
        session.commit()
    return written


def suites_for(name: str, engine: sa.Engine) -> list[Suite]:
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    with factory.begin() as s:
        s.execute(sa.insert(Edge), EXISTING)
    proc = BatchProcessor(factory, Edge, max_items=ROWS)

    def raw(gen: Iterator[list[dict[str, Any]]]) -> Callable[[], None]:
        def run() -> None:
            with factory.begin() as s:
                s.execute(sa.insert(Edge), next(gen))

        return run

    def ours(gen: Iterator[list[dict[str, Any]]], *, atomic: bool) -> Callable[[], None]:
        return lambda: proc.create_many(next(gen), atomic=atomic) and None

    big = Suite(
        f"batch-create-10k-{name}",
        description=f"one call inserts {ROWS:,} rows in one transaction ({name})",
        rounds=ROUNDS,
        number=1,
    )
    big.add("raw executemany", raw(batches(ROWS, 0)))
    big.add("atomic 0%", ours(batches(ROWS, 0), atomic=True))
    big.add("per-item 0%", ours(batches(ROWS, 0), atomic=False))
    big.add("per-item 1%", ours(batches(ROWS, 1), atomic=False))
    big.add("per-item 10%", ours(batches(ROWS, 10), atomic=False))
    big.add("atomic 1% (rejected)", ours(batches(ROWS, 1), atomic=True))
    big.compare("atomic 0%", "raw executemany")
    big.compare("per-item 0%", "atomic 0%")
    big.compare("per-item 1%", "atomic 0%")
    big.compare("per-item 10%", "atomic 0%")
    big.compare("atomic 1% (rejected)", "atomic 0%")
    big.note("goal: atomic within 1.2x of raw executemany; per-item at 1% within 2x of atomic")

    small = Suite(
        f"batch-naive-1k-{name}",
        description=f"1,000 rows, 1% conflicts, per-item results ({name})",
        rounds=max(3, ROUNDS // 2),
        number=1,
    )
    gen_ours, gen_naive = batches(1_000, 1), batches(1_000, 1)
    small.add("per-item (set-based)", lambda: proc.create_many(next(gen_ours), atomic=False))
    small.add("naive SAVEPOINT per row", lambda: naive_loop(factory, next(gen_naive)))
    small.compare("per-item (set-based)", "naive SAVEPOINT per row")
    return [big, small]


def run(suite: Suite) -> None:
    """Run, then add ratios of the fastest rounds: on a busy machine the minimum is the
    steadier estimate of what each case costs."""
    suite.run(write=False)
    pairs = [(row["ours"], row["peer"]) for row in suite.ratios()]
    for ours, peer in pairs:
        low = suite.results[ours].low / suite.results[peer].low
        suite.note(f"{ours} vs {peer}, fastest rounds: {low:.2f}")
    print("\n".join(f"- {n}" for n in suite.notes[-len(pairs) :]))
    suite.write()


def main() -> None:
    """Run the suites on SQLite, then on PostgreSQL when it answers."""
    with tempfile.TemporaryDirectory(prefix="gnbench-batch-") as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/bench.db")
        try:
            for suite in suites_for("sqlite", engine):
                run(suite)
        finally:
            engine.dispose()
    if not postgres_available():
        print(f"PostgreSQL not reachable at {DATABASE_URL}: skipped")
        return
    url = DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    try:
        for suite in suites_for("postgres", engine):
            run(suite)
    finally:
        Base.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS gennet_batch_idempotency"))
        engine.dispose()


if __name__ == "__main__":
    main()
