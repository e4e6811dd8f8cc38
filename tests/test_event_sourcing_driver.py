"""The sync store's driver path (appends on the DBAPI cursor), on SQLite and PostgreSQL.

The listener-based tests in test_event_sourcing_concurrency.py run the regular
SQLAlchemy path (a statement listener switches the driver path off); these check the
same guarantees with no listener attached, so the driver path is the one exercised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event

from gennet_toolkit.event_sourcing import EventStore, NewEvent, RecordedEvent
from gennet_toolkit.exceptions import ConcurrencyError, ServiceUnavailable
from tests.services import Database

KEY = b"test-key-0123456789abcdef"
WRITERS = 8


@pytest.fixture
def store(database: Database) -> Iterator[EventStore]:
    engine = database.engine(pool_size=WRITERS + 2, max_overflow=4)
    s = EventStore(engine, key=KEY)
    s.create_tables()
    yield s
    engine.dispose()


def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_plain_engines_take_the_driver_path_and_listeners_switch_it_off(
    store: EventStore,
) -> None:
    assert store._driver.usable()
    seen: list[str] = []

    @sa_event.listens_for(store.engine, "before_cursor_execute")
    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip().split()[0].upper())

    assert not store._driver.usable()
    store.append("s", [NewEvent("E")], 0)
    assert "INSERT" in seen  # the listener saw the append's statements
    sa_event.remove(store.engine, "before_cursor_execute", watch)
    assert store._driver.usable()


def test_rows_written_by_both_paths_read_back_alike_and_chain(store: EventStore) -> None:
    written: list[RecordedEvent] = []
    written += store.append("s", [NewEvent("E", {"n": 1}, "alice", {"k": [1, 2]})], 0)
    written += store.append("s", [NewEvent("E", {"n": n}) for n in (2, 3)], 1)

    def noop(*args: Any) -> None:
        pass

    sa_event.listen(store.engine, "before_cursor_execute", noop)  # regular path now
    written += store.append("s", [NewEvent("E", {"n": 4})], 3)
    sa_event.remove(store.engine, "before_cursor_execute", noop)
    # A whole second: stored text must match the regular path's (SQLite compares text).
    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    written += store.append("t", [NewEvent("F", {"n": 5}, occurred_at=whole)], 0)
    assert store.read_all() == written  # same timestamps, JSON and hashes on read-back
    assert [e.position for e in written] == [1, 2, 3, 4, 5]
    assert [e.position for e in store.query(since=whole, until=whole + timedelta(1))] == [5]
    assert store.verify().ok


def test_queued_appends_commit_together_behind_an_open_transaction(store: EventStore) -> None:
    store.append("dup", [NewEvent("E")], 0)
    results: dict[int, Any] = {}

    def write(n: int) -> None:
        # Writers 5 and 6 both expect "dup" at version 1: only one can win.
        stream, expected = ("dup", 1) if n in (5, 6) else (f"s{n}", 0)
        try:
            results[n] = store.append(stream, [NewEvent("E", {"n": n})], expected)
        except ConcurrencyError as exc:
            results[n] = exc

    with store.engine.connect() as slow:
        # The caller's own transaction holds the append lock until it commits.
        store.append("held", [NewEvent("E")], 0, connection=slow)
        threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        # One leader is blocked on the lock; the other seven queue behind it.
        _wait_for(lambda: len(store._group.pending) == WRITERS - 1, "seven queued appends")
        slow.commit()
    for t in threads:
        t.join(timeout=60)
    failed = [n for n, r in results.items() if isinstance(r, ConcurrencyError)]
    assert len(failed) == 1
    assert failed[0] in (5, 6)
    events = store.read_all()
    assert [e.position for e in events] == list(range(1, WRITERS + 2))
    assert store.verify().ok


def test_two_stores_on_separate_engines_interleave_without_forking_the_chain(
    database: Database,
) -> None:
    engines = [database.engine(pool_size=4) for _ in range(2)]
    stores = [EventStore(engine, key=KEY) for engine in engines]
    stores[0].create_tables()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        store = stores[n % 2]
        try:
            for i in range(10):
                store.append(f"w{n}", [NewEvent("E", {"i": i})], i)
                # Also race the other writers on one shared stream.
                while True:
                    try:
                        store.append("shared", [NewEvent("S")], store.stream_version("shared"))
                        break
                    except ConcurrencyError:
                        continue
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    events = stores[1].read_all(1, limit=1000)
    assert [e.position for e in events] == list(range(1, 81))
    assert [e.version for e in events if e.stream_id == "shared"] == list(range(1, 41))
    assert stores[0].verify().ok
    assert stores[1].verify().ok
    for engine in engines:
        engine.dispose()


@pytest.mark.postgres
def test_a_lock_bypassing_writer_collides_on_the_driver_path(database: Database) -> None:
    if database.kind != "postgres":
        pytest.skip("BEGIN IMMEDIATE keeps every other SQLite writer out until the commit")
    engine = database.engine(pool_size=4)
    store = EventStore(engine, key=KEY)
    store.create_tables()
    store.append("s", [NewEvent("E")], 0)
    when = store.read_all()[0].occurred_at
    rogue = {
        "position": 2,
        "stream_id": "rogue",
        "version": 1,
        "type": "E",
        "schema_version": 1,
        "data": "{}",
        "meta": "{}",
        "occurred_at": when,
        "hash": "0" * 64,
    }
    outcome: list[BaseException | list[RecordedEvent]] = []

    def append() -> None:
        try:
            outcome.append(store.append("s", [NewEvent("E")], 1))
        except BaseException as exc:
            outcome.append(exc)

    with engine.connect() as rogue_conn:
        # Not taking the append lock: its uncommitted row at position 2 makes the
        # store's INSERT at position 2 wait, then collide once it commits.
        rogue_conn.execute(store.events_table.insert(), rogue)
        t = threading.Thread(target=append)
        t.start()
        waiting = sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT%' AND pid <> pg_backend_pid()"
        )

        def store_waits() -> bool:
            # A fresh transaction each time: pg_stat_activity is frozen within one.
            with engine.connect() as probe:
                return probe.execute(waiting).scalar() == 1

        _wait_for(store_waits, "the store's INSERT to wait")
        rogue_conn.commit()
    t.join(timeout=30)
    assert isinstance(outcome[0], ConcurrencyError)
    assert [(e.position, e.stream_id) for e in store.read_all()] == [(1, "s"), (2, "rogue")]
    assert store.verify().first_broken == 2
    engine.dispose()


@pytest.mark.postgres
def test_a_killed_pooled_connection_costs_one_unavailable_then_appends_resume(
    database: Database,
) -> None:
    if database.kind != "postgres":
        pytest.skip("a PostgreSQL backend is what can be killed under the pool")
    engine = database.engine(pool_size=1, max_overflow=0)
    store = EventStore(engine, key=KEY)
    store.create_tables()
    store.append("s", [NewEvent("E")], 0)
    with engine.connect() as conn:  # the one pooled connection
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    killer = database.engine()
    with killer.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        conn.commit()
    killer.dispose()
    with pytest.raises(ServiceUnavailable):
        store.append("s", [NewEvent("E")], 1)
    # The dead connection was discarded, not pooled again.
    assert [e.version for e in store.append("s", [NewEvent("E")], 1)] == [2]
    assert store.verify().ok
    engine.dispose()


@pytest.mark.postgres
def test_an_autocommit_engine_takes_the_regular_path(database: Database) -> None:
    if database.kind != "postgres":
        pytest.skip("psycopg's autocommit flag")
    engine = database.engine(isolation_level="AUTOCOMMIT")
    store = EventStore(engine, key=KEY)
    store.create_tables()
    assert store._driver.run(store._core.append([])) is False  # the driver declines
    store.append("s", [NewEvent("E")], 0)
    store.append("s", [NewEvent("E")], 1)
    assert [e.position for e in store.read_all()] == [1, 2]
    assert store.verify().ok
    engine.dispose()
