"""event_sourcing: our store vs the ``eventsourcing`` library, on SQLite and PostgreSQL.

Suites (per database):

- ``event-sourcing-append-<db>``: one event appended and committed per call. Ours:
  ``EventStore.append(stream, [event], expected_version)`` (optimistic check, HMAC
  chain link, global position under the append lock); also ``AsyncEventStore`` on
  PostgreSQL (asyncpg). Theirs: ``aggregate.increment(); app.save(aggregate)`` with
  ``eventsourcing.sqlite`` / ``eventsourcing.postgres`` (table lock per insert). A third
  case, the floor, is one bare driver ``INSERT`` + ``COMMIT`` of the same payload with
  the same durability: the disk flush every library pays per commit.
- ``event-sourcing-rebuild-<db>``: rebuild the state of one 2,000-event stream. Ours:
  ``EventStore.rebuild`` decoding every event to a registered dataclass; theirs:
  ``app.repository.get(id)`` (no snapshots on either side, then both with one
  snapshot 50 events behind the head).

SQLite: a file per library in one temp directory (same file system), all in WAL mode
(eventsourcing switches to WAL itself; ours is told by a connect hook) with the default
``synchronous`` (FULL: each commit flushes the WAL), as eventsourcing leaves it.
PostgreSQL: ``DATABASE_URL`` (default ``postgresql://127.0.0.1:5432/test``), each library
in a schema of its own created and dropped by this script, the server's default
``synchronous_commit`` for every connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import psycopg
import sqlalchemy as sa
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks._harness import QUICK, Suite
from gennet_toolkit.event_sourcing import (
    AsyncEventStore,
    EventRegistry,
    EventStore,
    NewEvent,
)

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
KEY = b"bench-key-0123456789abcdef"
STREAM_LEN = 200 if QUICK else 2000
WRITERS = 8
# The floor: one row (the same JSON payload) per transaction, one index, nothing else.
FLOOR_TABLE = "CREATE TABLE floor (id {} PRIMARY KEY, data TEXT NOT NULL)"
FLOOR_INSERT = "INSERT INTO floor (data) VALUES (%s)"
FLOOR_ROW = ('{"by":1}',)


class Counter(Aggregate):
    """The eventsourcing side: an aggregate with one event-producing method."""

    @event("Created")
    def __init__(self) -> None:
        self.total = 0

    @event("Incremented")
    def increment(self, by: int) -> None:
        self.total += by


class Counters(Application):
    """eventsourcing application; snapshotting is switched on per suite."""


registry = EventRegistry()


@registry.register("Incremented")
@dataclasses.dataclass
class Incremented:
    """Our side's event class (decoded through the registry on rebuild)."""

    by: int


def _apply(total: int, e: Incremented) -> int:
    return total + e.by


def postgres_available() -> bool:
    """Whether the benchmark PostgreSQL accepts connections."""
    parts = urlsplit(DATABASE_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            return True
    except OSError:
        return False


class Appender:
    """One single-event append per call for our sync store, tracking the version."""

    def __init__(self, store: EventStore, stream: str) -> None:
        self.store, self.stream, self.version = store, stream, 0

    def __call__(self) -> None:
        self.store.append(self.stream, [NewEvent("Incremented", {"by": 1})], self.version)
        self.version += 1


def async_appender(store: AsyncEventStore, stream: str) -> Callable[[], Awaitable[None]]:
    """The same through the async store."""
    version = 0

    async def append() -> None:
        nonlocal version
        await store.append(stream, [NewEvent("Incremented", {"by": 1})], version)
        version += 1

    return append


def concurrent(pool: ThreadPoolExecutor, fns: list[Callable[[], None]]) -> Callable[[], None]:
    """One call = each of ``fns`` once, all at the same time on the thread pool."""

    def run() -> None:
        for future in [pool.submit(fn) for fn in fns]:
            future.result()

    return run


def async_concurrent(fns: list[Callable[[], Awaitable[None]]]) -> Callable[[], Awaitable[None]]:
    """One call = each of ``fns`` once, as concurrent tasks."""

    async def run() -> None:
        await asyncio.gather(*(fn() for fn in fns))

    return run


def _theirs_append(app: Application) -> Callable[[], None]:
    agg = Counter()
    app.save(agg)

    def append() -> None:
        agg.increment(by=1)
        app.save(agg)

    return append


def _fill(store: EventStore, app: Application) -> tuple[str, Any]:
    """A STREAM_LEN-event stream on both sides; returns (our stream id, their aggregate id)."""
    stream = f"long-{uuid.uuid4().hex[:6]}"
    batch = 500
    for start in range(0, STREAM_LEN, batch):
        events = [NewEvent("Incremented", {"by": 1}) for _ in range(min(batch, STREAM_LEN - start))]
        store.append(stream, events, start)
    agg = Counter()
    for _ in range(STREAM_LEN - 1):
        agg.increment(by=1)
    app.save(agg)
    return stream, agg.id


def run_db(
    name: str,
    engine: sa.Engine,
    app_env: dict[str, str],
    make_async_engine: Callable[[], Any] | None = None,
    floor: Callable[[], None] | None = None,
) -> None:
    """Both suites on one database."""
    store = EventStore(engine, key=KEY, registry=registry, table_prefix="bench_")
    store.create_tables()
    app = Counters(env=app_env)

    suite = Suite(
        f"event-sourcing-append-{name}",
        description=f"one event appended and committed per call, one writer ({name})",
    )
    suite.add("ours", Appender(store, f"a-{uuid.uuid4().hex[:6]}"))
    if make_async_engine is not None:
        # One engine per suite: each suite runs on its own event loop.
        astore = AsyncEventStore(make_async_engine(), key=KEY, table_prefix="bench_")
        suite.add("ours-async", async_appender(astore, f"aa-{uuid.uuid4().hex[:6]}"))
        suite.compare("ours-async", "eventsourcing")
    suite.add("eventsourcing", _theirs_append(app))
    if floor is not None:
        suite.add("floor: bare driver INSERT + COMMIT", floor)
    suite.compare("ours", "eventsourcing")
    suite.note(
        "SQLite in WAL mode for both"
        if name == "sqlite"
        else "PostgreSQL on loopback; psycopg 3 for both sync cases, asyncpg for ours-async"
    )
    suite.note(
        "each commit waits for the disk flush (same durability on both sides); the floor"
        " case is one bare INSERT + COMMIT through the driver: no library is faster than it"
    )
    suite.run()

    with ThreadPoolExecutor(WRITERS) as pool:
        burst = Suite(
            f"event-sourcing-append-concurrent-{name}",
            description=(
                f"{WRITERS} writers at once, one single-event append each per call, "
                f"each on its own stream ({name})"
            ),
            rounds=9,
        )
        ours_fns: list[Callable[[], None]] = [
            Appender(store, f"c{n}-{uuid.uuid4().hex[:6]}") for n in range(WRITERS)
        ]
        burst.add("ours", concurrent(pool, ours_fns))
        if make_async_engine is not None:
            astore = AsyncEventStore(make_async_engine(), key=KEY, table_prefix="bench_")
            afns = [async_appender(astore, f"ac{n}-{uuid.uuid4().hex[:6]}") for n in range(WRITERS)]
            burst.add("ours-async", async_concurrent(afns))
            burst.compare("ours-async", "eventsourcing")
        burst.add("eventsourcing", concurrent(pool, [_theirs_append(app) for _ in range(WRITERS)]))
        burst.compare("ours", "eventsourcing")
        burst.note(
            "ours: concurrent appends share one transaction and one flush (group commit);"
            " eventsourcing: one table-locked transaction per save"
        )
        burst.run()

    stream, agg_id = _fill(store, app)
    snap_app = Counters(env={**app_env, "IS_SNAPSHOTTING_ENABLED": "y"})
    snap_version = STREAM_LEN - 50
    snap_app.take_snapshot(agg_id, version=snap_version)
    ours_total, _ = store.rebuild(stream, _apply, 0, use_snapshot=False)
    store.save_snapshot(stream, snap_version, snap_version)

    def ours_full() -> None:
        store.rebuild(stream, _apply, 0, use_snapshot=False)

    def ours_snap() -> None:
        store.rebuild(stream, _apply, 0)

    def theirs_full() -> None:
        app.repository.get(agg_id)

    def theirs_snap() -> None:
        snap_app.repository.get(agg_id)

    if ours_total != STREAM_LEN or app.repository.get(agg_id).total != STREAM_LEN - 1:
        raise RuntimeError("the two streams do not hold the same events")
    rebuild = Suite(
        f"event-sourcing-rebuild-{name}",
        description=f"rebuild one {STREAM_LEN}-event stream ({name})",
        rounds=7,
        number=3,
    )
    rebuild.add("ours", ours_full)
    rebuild.add("eventsourcing", theirs_full)
    rebuild.add("ours-snapshot", ours_snap)
    rebuild.add("eventsourcing-snapshot", theirs_snap)
    rebuild.compare("ours", "eventsourcing")
    rebuild.compare("ours-snapshot", "eventsourcing-snapshot")
    rebuild.note("ours decodes each event to a registered dataclass; theirs builds event objects")
    rebuild.run()
    app.close()
    snap_app.close()


def bench_sqlite() -> None:
    """SQLite files in a temp dir, WAL for both."""
    tmp = tempfile.mkdtemp(prefix="gnbench-es-")
    try:
        engine = sa.create_engine(f"sqlite:///{tmp}/ours.db", pool_size=WRITERS + 2)

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": f"{tmp}/theirs.db"}
        raw = sqlite3.connect(f"{tmp}/floor.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")  # and the default synchronous, like both
        raw.execute(FLOOR_TABLE.format("INTEGER"))

        def floor() -> None:
            raw.execute("BEGIN")
            raw.execute(FLOOR_INSERT.replace("%s", "?"), FLOOR_ROW)
            raw.execute("COMMIT")

        run_db("sqlite", engine, env, floor=floor)
        raw.close()
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_postgres() -> None:
    """Two private schemas in the ``test`` database, dropped afterwards."""
    parts = urlsplit(DATABASE_URL)
    ours_schema = f"gnbench_ours_{uuid.uuid4().hex[:6]}"
    theirs_schema = f"gnbench_es_{uuid.uuid4().hex[:6]}"
    base = DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{ours_schema}"')
        conn.exec_driver_sql(f'CREATE SCHEMA "{theirs_schema}"')
    try:
        engine = sa.create_engine(
            base,
            connect_args={"options": f"-csearch_path={ours_schema}"},
            pool_size=WRITERS + 2,
        )

        def make_async_engine() -> Any:
            return create_async_engine(
                DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://", 1),
                connect_args={"server_settings": {"search_path": ours_schema}},
                pool_size=WRITERS + 2,
            )

        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": (parts.path or "/test").lstrip("/"),
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_SCHEMA": theirs_schema,
            "POSTGRES_POOL_SIZE": str(WRITERS + 2),
        }
        raw = psycopg.connect(
            DATABASE_URL.replace("postgresql+psycopg://", "postgresql://", 1),
            options=f"-csearch_path={ours_schema}",
        )
        raw.execute(FLOOR_TABLE.format("BIGSERIAL"))
        raw.commit()

        def floor() -> None:
            raw.execute(FLOOR_INSERT, FLOOR_ROW)
            raw.commit()

        run_db("postgres", engine, env, make_async_engine, floor=floor)
        raw.close()
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{ours_schema}" CASCADE')
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{theirs_schema}" CASCADE')
        admin.dispose()


def main() -> None:
    """Run the SQLite suites, then the PostgreSQL ones when it is reachable."""
    bench_sqlite()
    if postgres_available():
        bench_postgres()
    else:
        print("PostgreSQL not reachable: skipped its suites")


if __name__ == "__main__":
    main()
