"""batch_operations under real concurrency on PostgreSQL: rows written by another
transaction between our pre-checks and our insert, and one idempotency key used twice
at once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gennet_toolkit.batch_operations import BatchProcessor, BatchResult
from tests.services import Database
from tests.test_batch_operations import Base, Edge, Gene, codes, count


@pytest.fixture
def pg(database: Database) -> Iterator[sessionmaker[Session]]:
    if database.kind != "postgres":
        pytest.skip("row-level lock waits are a PostgreSQL scenario (SQLite has one writer)")
    engine = database.engine()
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    with factory.begin() as s:
        s.add_all(Gene(id=i, symbol=f"g{i}") for i in range(1, 11))
        s.execute(sa.text("SELECT setval(pg_get_serial_sequence('bo_genes', 'id'), 1000)"))
    yield factory
    engine.dispose()


def wait_for_lock_wait(factory: sessionmaker[Session], timeout: float = 20.0) -> None:
    """Block until some backend of this database waits on a row or tuple lock."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as s:
            if s.scalar(query):
                return
        time.sleep(0.02)
    raise AssertionError("the batch never waited on the concurrent transaction")


@contextlib.contextmanager
def concurrent(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Another transaction, always ended (so a failing test cannot hang the teardown)."""
    other = factory()
    try:
        yield other
    finally:
        other.rollback()
        other.close()


def in_thread(fn: Callable[[], BatchResult]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # surfaced by the test's assertion
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.postgres
def test_a_row_inserted_concurrently_is_reported_as_a_duplicate(
    pg: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(pg, Gene)
    items = [{"symbol": "a"}, {"symbol": "race"}, {"symbol": "b"}]
    with concurrent(pg) as other:
        other.add(Gene(id=100, symbol="race"))
        other.flush()  # inserted, not committed: our pre-checks cannot see it
        thread, out = in_thread(lambda: proc.create_many(items, atomic=False))
        wait_for_lock_wait(pg)
        other.commit()
    thread.join()
    result = out[0]
    assert isinstance(result, BatchResult)
    assert result.created == [0, 2]
    assert codes(result) == {1: "duplicate"}
    assert count(pg, Gene) == 13


@pytest.mark.postgres
def test_a_parent_deleted_concurrently_is_isolated_by_bisection(
    pg: sessionmaker[Session],
) -> None:
    """The FK pre-check saw gene 7; it is gone by insert time: only that edge fails."""
    proc = BatchProcessor(pg, Edge)
    items = [{"src": s, "tgt": t} for s in (1, 2, 3) for t in (4, 5, 6, 7, 8)]
    with concurrent(pg) as other:
        other.execute(sa.delete(Gene).where(Gene.id == 7))
        thread, out = in_thread(lambda: proc.create_many(items, atomic=False, chunk_size=8))
        wait_for_lock_wait(pg)
        other.commit()
    thread.join()
    result = out[0]
    assert isinstance(result, BatchResult)
    failed = {i for i, item in enumerate(items) if item["tgt"] == 7}
    assert codes(result) == dict.fromkeys(failed, "foreign_key")
    assert count(pg, Edge) == len(items) - len(failed)


@pytest.mark.postgres
def test_an_atomic_batch_hit_by_a_concurrent_insert_writes_nothing(
    pg: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(pg, Gene)
    items = [{"symbol": "a"}, {"symbol": "b"}, {"symbol": "race"}]
    with concurrent(pg) as other:
        other.add(Gene(id=100, symbol="race"))
        other.flush()
        thread, out = in_thread(lambda: proc.create_many(items))
        wait_for_lock_wait(pg)
        other.commit()
    thread.join()
    result = out[0]
    assert isinstance(result, BatchResult)
    assert result.rejected
    assert codes(result) == {2: "duplicate"}
    assert count(pg, Gene) == 11


@pytest.mark.postgres
def test_one_idempotency_key_used_twice_at_once_writes_once(
    pg: sessionmaker[Session],
) -> None:
    in_hook, go = threading.Event(), threading.Event()

    def hold_first(session: Session, result: BatchResult) -> None:
        if not in_hook.is_set():
            in_hook.set()
            go.wait(20)

    proc = BatchProcessor(pg, Gene, before_commit=hold_first)
    proc.create_tables()
    items = [{"symbol": "x"}, {"symbol": "y"}]
    first, out1 = in_thread(lambda: proc.create_many(items, idempotency_key="same"))
    assert in_hook.wait(20)
    second, out2 = in_thread(lambda: proc.create_many(items, idempotency_key="same"))
    try:
        wait_for_lock_wait(pg)
    finally:
        go.set()
    first.join()
    second.join()
    r1, r2 = out1[0], out2[0]
    assert isinstance(r1, BatchResult)
    assert isinstance(r2, BatchResult)
    assert not r1.replayed
    assert r2.replayed
    assert r2.keys == r1.keys
    assert count(pg, Gene) == 12
