"""Concurrent writers and a tailing reader, on SQLite and PostgreSQL.

These are the guarantees that matter under load: no lost and no duplicate versions
when writers race on one stream, and a reader following ``read_all`` that never skips
an event a slower writer commits late.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from gennet_toolkit.event_sourcing import (
    AsyncEventStore,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from gennet_toolkit.exceptions import ConcurrencyError
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


def test_eight_threads_racing_on_one_stream_lose_nothing(store: EventStore) -> None:
    per_writer = 4
    start = threading.Barrier(WRITERS)
    conflicts = Counter[int]()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            first = True
            done = 0
            while done < per_writer:
                version = 0 if first else store.stream_version("shared")
                if first:
                    start.wait()  # everyone appends at version 0 at once: one wins
                    first = False
                try:
                    store.append("shared", [NewEvent("Tick", {"writer": n, "i": done})], version)
                    done += 1
                except ConcurrencyError:
                    conflicts[n] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    events = store.read_stream("shared")
    assert [e.version for e in events] == list(range(1, WRITERS * per_writer + 1))
    assert sorted((e.data["writer"], e.data["i"]) for e in events) == [
        (n, i) for n in range(WRITERS) for i in range(per_writer)
    ]
    assert sum(conflicts.values()) >= WRITERS - 1  # the first round alone has 7 losers
    assert store.verify().ok


@pytest.mark.anyio
async def test_eight_tasks_racing_on_one_stream_lose_nothing(database: Database) -> None:
    engine = database.async_engine(pool_size=WRITERS + 2, max_overflow=4)
    s = AsyncEventStore(engine, key=KEY)
    await s.create_tables()
    per_writer = 3
    losers = 0
    ready = asyncio.Event()

    async def writer(n: int) -> None:
        nonlocal losers
        done = 0
        version = 0
        await ready.wait()
        while done < per_writer:
            try:
                await s.append("shared", [NewEvent("Tick", {"writer": n, "i": done})], version)
                done += 1
            except ConcurrencyError:
                losers += 1
            version = await s.stream_version("shared")

    tasks = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
    await asyncio.sleep(0)
    ready.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    events = await s.read_stream("shared")
    assert [e.version for e in events] == list(range(1, WRITERS * per_writer + 1))
    assert len({(e.data["writer"], e.data["i"]) for e in events}) == WRITERS * per_writer
    assert losers >= WRITERS - 1
    assert (await s.verify()).ok
    await engine.dispose()


def test_reader_following_read_all_sees_every_event_once_in_order(store: EventStore) -> None:
    streams, per_stream = 6, 25
    stop = threading.Event()
    seen: list[RecordedEvent] = []
    problems: list[str] = []
    errors: list[BaseException] = []

    def follow() -> None:
        last = 0
        try:
            while True:
                finished = stop.is_set()  # read once more after the writers are done
                batch = store.read_all(from_position=last + 1, limit=7)
                for event in batch:
                    if event.position != last + 1:
                        problems.append(f"expected {last + 1}, got {event.position}")
                    last = event.position
                seen.extend(batch)
                if finished and not batch:
                    return
        except BaseException as exc:
            errors.append(exc)

    def write(n: int) -> None:
        try:
            for i in range(per_stream):
                # Batches of 1-3 events, so transactions of different sizes interleave.
                size = 1 + (i + n) % 3
                store.append(
                    f"s{n}",
                    [NewEvent("E", {"s": n, "i": i, "k": k}) for k in range(size)],
                    0 if i == 0 else "any",
                )
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=follow)
    writers = [threading.Thread(target=write, args=(n,)) for n in range(streams)]
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=60)
    stop.set()
    reader.join(timeout=60)
    assert not errors
    assert not problems
    total = sum(sum(1 + (i + n) % 3 for i in range(per_stream)) for n in range(streams))
    assert [e.position for e in seen] == list(range(1, total + 1))
    assert {e.stream_id for e in seen} == {f"s{n}" for n in range(streams)}
    for n in range(streams):
        versions = [e.version for e in seen if e.stream_id == f"s{n}"]
        assert versions == list(range(1, len(versions) + 1))
    assert store.verify().ok


@pytest.mark.anyio
async def test_async_writers_and_follower_on_many_streams(database: Database) -> None:
    engine = database.async_engine(pool_size=8, max_overflow=4)
    s = AsyncEventStore(engine, key=KEY)
    await s.create_tables()
    streams, per_stream = 5, 15
    done = asyncio.Event()
    seen: list[int] = []

    async def write(n: int) -> None:
        for i in range(per_stream):
            await s.append(f"a{n}", [NewEvent("E", {"i": i})], i)

    async def follow() -> None:
        last = 0
        while True:
            finished = done.is_set()
            batch = await s.read_all(last + 1, limit=5)
            for event in batch:
                assert event.position == last + 1
                last = event.position
                seen.append(event.position)
            if finished and not batch:
                return
            await asyncio.sleep(0)

    reader = asyncio.create_task(follow())
    await asyncio.wait_for(asyncio.gather(*(write(n) for n in range(streams))), timeout=60)
    done.set()
    await asyncio.wait_for(reader, timeout=60)
    assert seen == list(range(1, streams * per_stream + 1))
    await engine.dispose()


def test_an_open_append_transaction_holds_later_positions_back(store: EventStore) -> None:
    """The late-commit case: a reader must not see position p+1 while p is uncommitted."""
    store.append("a", [NewEvent("E")], 0)
    later_done = threading.Event()

    def later_writer() -> None:
        store.append("b", [NewEvent("E")], 0)
        later_done.set()

    with store.engine.connect() as slow:
        # A service-layer append inside the caller's own transaction, committed late.
        store.append("c", [NewEvent("E", {"slow": True})], 0, connection=slow)
        t = threading.Thread(target=later_writer)
        t.start()
        assert not later_done.wait(0.5)  # queued behind the open transaction
        assert [e.position for e in store.read_all(1)] == [1]
        slow.commit()
    t.join(timeout=30)
    assert later_done.is_set()
    events = store.read_all(1)
    assert [(e.position, e.stream_id) for e in events] == [(1, "a"), (2, "c"), (3, "b")]
    assert store.verify().ok


def _hold_first_insert(store: EventStore, waiting: int) -> list[str]:
    """Pause the first INSERT until ``waiting`` other appends are queued behind it."""
    import time

    statements: list[str] = []

    @sa_event.listens_for(store.engine, "before_cursor_execute")
    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            statements.append(statement)
            if len(statements) == 1:
                deadline = time.monotonic() + 20
                while len(store._group.pending) < waiting and time.monotonic() < deadline:
                    time.sleep(0.005)

    return statements


def test_concurrent_appends_share_one_transaction_each_checked_alone(store: EventStore) -> None:
    commits = Counter[str]()
    sa_event.listen(store.engine, "commit", lambda conn: commits.update(["commit"]))
    inserts = _hold_first_insert(store, waiting=7)
    results: dict[int, Any] = {}

    def write(n: int) -> None:
        # Writers 5 and 6 both expect a fresh stream "dup": only one can win.
        stream = "dup" if n in (5, 6) else f"s{n}"
        try:
            results[n] = store.append(stream, [NewEvent("E", {"n": n})], 0)
        except ConcurrencyError as exc:
            results[n] = exc

    first = threading.Thread(target=write, args=(0,))
    first.start()
    while not inserts:
        threading.Event().wait(0.005)
    others = [threading.Thread(target=write, args=(n,)) for n in range(1, WRITERS)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(timeout=60)
    assert len(inserts) == 2  # the held leader's, then one for the seven queued behind it
    assert commits["commit"] >= 2
    failed = [n for n, r in results.items() if isinstance(r, ConcurrencyError)]
    assert len(failed) == 1
    assert failed[0] in (5, 6)
    events = store.read_all()
    assert [e.position for e in events] == list(range(1, WRITERS))
    assert sorted(e.data["n"] for e in events) == sorted(set(range(WRITERS)) - set(failed))
    assert store.verify().ok


def test_a_failed_shared_transaction_fails_every_append_in_it(store: EventStore) -> None:
    inserts = _hold_first_insert(store, waiting=3)

    @sa_event.listens_for(store.engine, "before_cursor_execute")
    def break_second(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and len(inserts) == 2:
            raise RuntimeError("disk full")

    outcomes: dict[int, Any] = {}

    def write(n: int) -> None:
        try:
            outcomes[n] = store.append(f"s{n}", [NewEvent("E")], 0)
        except RuntimeError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=write, args=(0,))]
    threads[0].start()
    while not inserts:
        threading.Event().wait(0.005)
    threads += [threading.Thread(target=write, args=(n,)) for n in (1, 2, 3)]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(outcomes[0], list)
    errors = [outcomes[n] for n in (1, 2, 3)]
    # Nobody saw events of the rolled-back transaction as recorded.
    assert all(isinstance(e, RuntimeError) for e in errors)
    assert len({id(e) for e in errors}) == 3  # each caller raises its own copy
    assert [e.stream_id for e in store.read_all()] == ["s0"]
    assert store.verify().ok


@pytest.mark.parametrize("in_callers_transaction", [False, True])
def test_a_writer_bypassing_the_lock_collides_instead_of_forking_the_chain(
    store: EventStore, in_callers_transaction: bool
) -> None:
    if store.engine.dialect.name == "sqlite" and not in_callers_transaction:
        pytest.skip("BEGIN IMMEDIATE keeps every other SQLite writer out until the commit")
    store.append("s", [NewEvent("E")], 0)
    when = store.read_all()[0].occurred_at.replace(tzinfo=None)
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
    fired: list[bool] = []

    @sa_event.listens_for(store.engine, "before_cursor_execute")
    def sneak_in(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Right before the store's INSERT, another connection (not taking the append
        # lock) commits a row at the position the store is about to use.
        if statement.lstrip().upper().startswith("INSERT") and not fired:
            fired.append(True)
            with store.engine.connect() as other:
                other.execute(store.events_table.insert(), rogue)
                other.commit()

    if in_callers_transaction:
        with store.engine.connect() as conn, pytest.raises(ConcurrencyError):
            store.append("s", [NewEvent("E")], 1, connection=conn)
    else:
        with pytest.raises(ConcurrencyError):
            store.append("s", [NewEvent("E")], 1)
    assert [(e.position, e.stream_id) for e in store.read_all()] == [(1, "s"), (2, "rogue")]
    assert store.verify().first_broken == 2  # and the rogue row is not a valid link
