"""Event store: appends, reads, queries, snapshots, the registry and the hash chain.

Every store test runs on SQLite and on a private PostgreSQL schema (``database``),
through the sync and the async store alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
import sqlalchemy as sa

import gennet_toolkit.event_sourcing as es
from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.event_sourcing import (
    ANY,
    AsyncEventStore,
    ChainAnchor,
    EventDecodeError,
    EventRegistry,
    EventStore,
    InvalidEventError,
    NewEvent,
    RecordedEvent,
    UnknownEventType,
    WrongExpectedVersion,
)
from gennet_toolkit.exceptions import (
    BadRequest,
    ConcurrencyError,
    ConfigurationError,
    ServiceUnavailable,
)
from tests.services import Database, free_port

KEY = b"test-key-0123456789abcdef"


@pytest.fixture
def store(database: Database) -> Iterator[EventStore]:
    engine = database.engine()
    s = EventStore(engine, key=KEY)
    s.create_tables()
    yield s
    engine.dispose()


@pytest.fixture
async def astore(database: Database) -> AsyncIterator[AsyncEventStore]:
    engine = database.async_engine()
    s = AsyncEventStore(engine, key=KEY)
    await s.create_tables()
    yield s
    await engine.dispose()


def ev(type_: str = "GeneAdded", **data: Any) -> NewEvent:
    return NewEvent(type_, data)


def test_public_names_are_exported() -> None:
    assert sorted(es.__all__) == sorted(
        [
            "ANY",
            "AsyncEventStore",
            "AuditBatch",
            "AuditTrailMiddleware",
            "ChainAnchor",
            "EventDecodeError",
            "EventRegistry",
            "EventStore",
            "InvalidEventError",
            "NewEvent",
            "RecordedEvent",
            "Snapshot",
            "UnknownEventType",
            "Upcaster",
            "VerifyReport",
            "WrongExpectedVersion",
            "arecord",
            "audit_event",
            "record",
        ]
    )
    for name in es.__all__:
        assert getattr(es, name).__doc__ or name in {"ANY", "Upcaster"}


# ---------------------------------------------------------------------- append / read


def test_append_assigns_versions_and_gap_free_positions(store: EventStore) -> None:
    first = store.append("net-1", [ev(symbol="lacZ"), ev(symbol="lacY")], expected_version=0)
    second = store.append("net-2", [ev(symbol="araC")], expected_version=0)
    third = store.append("net-1", [ev("GeneRemoved", symbol="lacY")], expected_version=2)
    assert [(e.stream_id, e.version, e.position) for e in first + second + third] == [
        ("net-1", 1, 1),
        ("net-1", 2, 2),
        ("net-2", 1, 3),
        ("net-1", 3, 4),
    ]
    stream = store.read_stream("net-1")
    assert [e.data for e in stream] == [{"symbol": "lacZ"}, {"symbol": "lacY"}, {"symbol": "lacY"}]
    assert stream == first + third  # what append returned is what a reader loads
    assert [e.version for e in store.read_stream("net-1", from_version=2)] == [2, 3]
    assert [e.position for e in store.read_all(from_position=2, limit=2)] == [2, 3]
    assert store.stream_version("net-1") == 3
    assert store.stream_version("missing") == 0


def test_stale_expected_version_raises_concurrency_error(store: EventStore) -> None:
    store.append("s", [ev()], expected_version=0)
    with pytest.raises(WrongExpectedVersion) as info:
        store.append("s", [ev()], expected_version=0)
    assert isinstance(info.value, ConcurrencyError)
    assert (info.value.expected_version, info.value.actual_version) == (0, 1)
    problem = info.value.to_problem()
    assert problem["status"] == 409
    assert problem["code"] == "concurrency_conflict"
    assert '"s"' not in str(problem)  # the stream id stays out of the body
    with pytest.raises(WrongExpectedVersion):
        store.append("s", [ev()], expected_version=5)  # ahead of the stream is wrong too
    assert len(store.read_stream("s")) == 1
    store.append("s", [ev()], expected_version=ANY)
    assert store.stream_version("s") == 2


@pytest.mark.parametrize("bad", [-1, "2", 1.0, True, None])
def test_malformed_expected_version_is_a_400(store: EventStore, bad: Any) -> None:
    with pytest.raises(InvalidEventError) as info:
        store.append("s", [ev()], expected_version=bad)
    assert isinstance(info.value, BadRequest)
    assert isinstance(info.value, ValueError)
    assert store.read_all() == []


@pytest.mark.parametrize(
    ("stream_id", "events"),
    [
        ("", [NewEvent("X")]),
        ("x" * 201, [NewEvent("X")]),
        ("s", [NewEvent("")]),
        ("s", [NewEvent("X", {"v": float("nan")})]),
        ("s", [NewEvent("X", {"v": object()})]),
        ("s", [NewEvent("X", metadata={"secret-value": {1, 2}})]),
        ("s", NewEvent("X")),
        ("s", [NewEvent("X", actor="a" * 201)]),
        # Lone surrogates (a JSON body's "\\ud800") would make the driver fail: a 400.
        ("\ud800", [NewEvent("X")]),
        ("s", [NewEvent("X\udfff")]),
        ("s", [NewEvent("X", actor="\ud800")]),
        ("s", [NewEvent("X", {"v": "a\ud800"})]),
        ("s", [NewEvent("X", {"\ud800": 1})]),
        ("s", [NewEvent("X", metadata={"correlation_id": "\ud800"})]),
    ],
)
def test_malformed_events_are_refused_without_echoing_them(
    store: EventStore, stream_id: str, events: Any
) -> None:
    with pytest.raises(InvalidEventError) as info:
        store.append(stream_id, events, expected_version=0)
    body = info.value.to_problem()
    assert body["status"] == 400
    assert "secret-value" not in str(body)
    assert "nan" not in str(body).lower()
    assert store.read_all() == []


@pytest.mark.parametrize("bad", ["\ud800", "a\x00"])
def test_reads_with_undriveable_text_are_400_not_a_driver_error(
    store: EventStore, bad: str
) -> None:
    with pytest.raises(InvalidEventError):
        store.read_stream(bad)
    with pytest.raises(InvalidEventError):
        store.query(actor=bad)
    with pytest.raises(InvalidEventError):
        store.query(type=bad)
    with pytest.raises(InvalidEventError):
        store.save_snapshot("s", 0, {"k": "\ud800"})


def test_appending_nothing_writes_nothing(store: EventStore) -> None:
    assert store.append("s", [], expected_version=0) == []
    assert store.head() is None


def test_correlation_id_and_actor_are_recorded_and_queryable(store: EventStore) -> None:
    token = correlation_id_var.set("req-42")
    try:
        store.append("s", [ev(), NewEvent("GeneRemoved", actor="carol")], 0, actor="bob")
    finally:
        correlation_id_var.reset(token)
    store.append("s", [ev()], 2, actor="alice")
    events = store.read_all()
    assert [e.actor for e in events] == ["bob", "carol", "alice"]
    assert [e.correlation_id for e in events] == ["req-42", "req-42", None]
    assert [e.position for e in store.query(correlation_id="req-42")] == [1, 2]
    assert [e.position for e in store.query(actor="bob")] == [1]
    assert [e.position for e in store.query(type="GeneAdded")] == [1, 3]
    assert [
        e.position for e in store.query(type=["GeneAdded", "GeneRemoved"], after_position=1)
    ] == [2, 3]
    assert [e.position for e in store.query(type="GeneAdded", limit=1)] == [1]


def test_query_by_time_range(store: EventStore) -> None:
    base = datetime(2024, 1, 1, 12, tzinfo=UTC)
    events = [NewEvent("T", {"i": i}, occurred_at=base + timedelta(hours=i)) for i in range(5)]
    store.append("s", events, 0)
    window = store.query(since=base + timedelta(hours=1), until=base + timedelta(hours=3))
    assert [e.data["i"] for e in window] == [1, 2]
    # A naive datetime is UTC; another offset is converted.
    cet = datetime(2024, 1, 1, 16, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    assert [e.data["i"] for e in store.query(since=cet)] == [4]
    assert store.read_all()[0].occurred_at == base


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": 10_001}, {"after_position": -1}, {"type": []}, {"since": "yesterday"}],
)
def test_bad_query_arguments_are_400(store: EventStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError):
        store.query(**kwargs)


def test_replay_feeds_every_event_in_order(store: EventStore) -> None:
    for i in range(7):
        store.append(f"s{i % 3}", [ev(i=i)], ANY)
    seen: list[int] = []
    last = store.replay(lambda e: seen.append(e.data["i"]), batch_size=2)
    assert seen == list(range(7))
    assert last == 7
    seen.clear()
    assert store.replay(lambda e: seen.append(e.data["i"]), stream_id="s1") == 5
    assert seen == [1, 4]
    seen.clear()
    assert store.replay(lambda e: seen.append(e.data["i"]), from_position=6) == 7
    assert seen == [5, 6]


def test_snapshots_shorten_rebuild(store: EventStore) -> None:
    store.append("counter", [ev("Inc", by=i) for i in range(1, 11)], 0)

    applied: list[int] = []

    def apply(state: int, event: RecordedEvent) -> int:
        applied.append(event.version)
        return state + int(event.data["by"])

    assert store.rebuild("counter", apply, 0) == (55, 10)
    assert len(applied) == 10
    store.save_snapshot("counter", 8, 36)
    applied.clear()
    assert store.rebuild("counter", apply, 0) == (55, 10)
    assert applied == [9, 10]
    snap = store.load_snapshot("counter")
    assert snap is not None
    assert (snap.version, snap.state) == (8, 36)
    assert store.load_snapshot("other") is None
    with pytest.raises(InvalidEventError):
        store.save_snapshot("counter", 11, 0)  # ahead of the stream
    with pytest.raises(InvalidEventError):
        store.save_snapshot("counter", 9, {"x": float("inf")})


# ---------------------------------------------------------------------- async API


@pytest.mark.anyio
async def test_async_store_has_the_same_behaviour(astore: AsyncEventStore) -> None:
    await astore.append("s", [ev(i=1), ev(i=2)], 0, actor="bob")
    with pytest.raises(WrongExpectedVersion):
        await astore.append("s", [ev()], 0)
    assert [e.version for e in await astore.read_stream("s")] == [1, 2]
    assert [e.position for e in await astore.read_all(2)] == [2]
    assert len(await astore.query(actor="bob")) == 2

    seen: list[int] = []

    async def projection(event: RecordedEvent) -> None:
        seen.append(event.data["i"])

    assert await astore.replay(projection) == 2
    assert seen == [1, 2]
    await astore.save_snapshot("s", 1, 1)
    assert await astore.rebuild("s", lambda st, e: st + e.data["i"], 0) == (3, 2)
    report = await astore.verify(anchor=await astore.head())
    assert report.ok
    assert report.checked == 2
    await astore.ping()


@pytest.mark.anyio
async def test_async_append_joins_the_callers_transaction(astore: AsyncEventStore) -> None:
    async with astore.engine.connect() as conn:
        await astore.append("s", [ev(i=1)], 0, connection=conn)
        await conn.rollback()
    assert await astore.read_all() == []
    async with astore.engine.connect() as conn:
        await astore.append("s", [ev(i=1)], 0, connection=conn)
        await conn.commit()
    assert [e.data for e in await astore.read_all()] == [{"i": 1}]


@pytest.mark.anyio
async def test_async_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("GENNET_EVENT_STORE_URL", f"sqlite+aiosqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("GENNET_EVENT_STORE_KEY", "k" * 20)
    s = AsyncEventStore.from_env()
    await s.create_tables()
    await s.append("s", [ev()], 0)
    assert (await s.verify()).ok
    await s.engine.dispose()


# ---------------------------------------------------------------------- tamper evidence


def _table(store: EventStore) -> str:
    return store.events_table.name


def test_verify_reports_a_row_altered_by_raw_sql(store: EventStore) -> None:
    for i in range(6):
        store.append("s", [ev(i=i)], i)
    assert store.verify().ok
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {_table(store)} SET data = :d WHERE position = 4"), {"d": '{"i":99}'}
        )
    report = store.verify(batch_size=2)
    assert not report.ok
    assert (report.first_broken, report.reason) == (4, "hash mismatch")
    assert report.head == ChainAnchor(3, store.read_all(3, 1)[0].hash)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "mallory"),
        ("type", "GeneRemoved"),
        ("stream_id", "other"),
        ("meta", '{"x":1}'),
        ("data", "not json"),
    ],
)
def test_verify_catches_edits_to_any_hashed_column(
    store: EventStore, column: str, value: str
) -> None:
    store.append("s", [ev(i=i) for i in range(3)], 0)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {_table(store)} SET {column} = :v WHERE position = 2"), {"v": value}
        )
    report = store.verify()
    assert (report.ok, report.first_broken) == (False, 2)


def test_verify_catches_a_deleted_middle_row_and_a_recomputed_hash(store: EventStore) -> None:
    store.append("s", [ev(i=i) for i in range(5)], 0)
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {_table(store)} WHERE position = 3"))
    report = store.verify()
    assert (report.first_broken, report.reason) == (3, "missing position")
    # Someone without the key recomputes a plain SHA-256 for an edited row: still caught.
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {_table(store)} SET hash = :h WHERE position = 1"), {"h": "0" * 64}
        )
    assert store.verify().first_broken == 1


def test_truncation_is_caught_only_with_the_anchor(store: EventStore) -> None:
    store.append("s", [ev(i=i) for i in range(5)], 0)
    anchor = store.head()
    assert anchor is not None
    assert anchor.position == 5
    saved = ChainAnchor.from_dict(anchor.to_dict())  # as persisted elsewhere
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {_table(store)} WHERE position >= 4"))
    assert store.verify().ok  # a shorter chain is internally consistent
    report = store.verify(anchor=saved)
    assert (report.ok, report.first_broken, report.reason) == (False, 4, "truncated")
    # Rolling back and appending new events past the anchor is a different chain.
    store.append("s", [ev(i=100), ev(i=101)], 3)
    report = store.verify(anchor=saved)
    assert (report.ok, report.first_broken, report.reason) == (False, 5, "anchor mismatch")


def test_another_key_does_not_verify(store: EventStore) -> None:
    store.append("s", [ev()], 0)
    other = EventStore(store.engine, key=b"another-key-0123456789")
    assert (other.verify().first_broken, store.verify().ok) == (1, True)


def test_short_key_and_unknown_dialect_are_configuration_errors(database: Database) -> None:
    with pytest.raises(ConfigurationError):
        EventStore(database.engine(), key=b"short")
    with pytest.raises(ConfigurationError):
        EventStore(database.engine(), key=KEY, table_prefix="x; drop")


def test_from_env_reads_url_key_and_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("APP_EVENT_STORE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("APP_EVENT_STORE_KEY", "k" * 20)
    monkeypatch.setenv("APP_EVENT_STORE_TABLE_PREFIX", "audit_")
    s = EventStore.from_env("APP_")
    assert s.events_table.name == "audit_events"
    s.create_tables()
    s.append("s", [ev()], 0)
    assert s.verify().ok
    s.engine.dispose()
    monkeypatch.delenv("APP_EVENT_STORE_KEY")
    with pytest.raises(ConfigurationError):
        EventStore.from_env("APP_")


# ---------------------------------------------------------------------- registry


def _registry() -> EventRegistry:
    reg = EventRegistry()

    @reg.register("GeneAdded", version=3)
    @dataclasses.dataclass
    class GeneAdded:
        symbol: str
        organism: str
        essential: bool

    @reg.register("EdgeAdded")
    class EdgeAdded(pydantic.BaseModel):
        source: str
        target: str
        sign: int

    @reg.upcaster("GeneAdded", from_version=1)
    def _v1(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "organism": "E. coli"}

    @reg.upcaster("GeneAdded", from_version=2)
    def _v2(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "essential": False}

    return reg


def test_registered_classes_round_trip_and_old_versions_are_upcast(database: Database) -> None:
    reg = _registry()
    engine = database.engine()
    s = EventStore(engine, key=KEY, registry=reg)
    s.create_tables()
    gene_cls = reg._by_name["GeneAdded"].cls
    edge_cls = reg._by_name["EdgeAdded"].cls
    s.append(
        "n",
        [
            NewEvent("GeneAdded", {"symbol": "lacZ"}, schema_version=1),
            NewEvent("GeneAdded", {"symbol": "lacY", "organism": "Yeast"}, schema_version=2),
            gene_cls("araC", "E. coli", True),
            edge_cls(source="araC", target="lacZ", sign=-1),
        ],
        0,
        actor="bob",
    )
    raw = s.read_stream("n")
    assert [e.schema_version for e in raw] == [1, 2, 3, 1]
    decoded: list[Any] = []
    s.replay(decoded.append)
    assert decoded == [
        gene_cls("lacZ", "E. coli", False),
        gene_cls("lacY", "Yeast", False),
        gene_cls("araC", "E. coli", True),
        edge_cls(source="araC", target="lacZ", sign=-1),
    ]
    assert s.rebuild("n", lambda st, e: [*st, type(e).__name__], [])[0] == ["GeneAdded"] * 3 + [
        "EdgeAdded"
    ]
    assert raw[2].actor == "bob"
    engine.dispose()


def test_unknown_types_decode_to_recorded_events_or_raise_when_strict() -> None:
    event = RecordedEvent(
        7, "s", 1, "os.system", {"cmd": "boom"}, None, {}, 1, datetime.now(UTC), ""
    )
    assert EventRegistry().decode(event) is event
    with pytest.raises(UnknownEventType) as info:
        EventRegistry(strict=True).decode(event)
    assert info.value.position == 7
    assert "boom" not in info.value.to_problem()["detail"]


def test_decoding_never_imports_what_the_database_names(store: EventStore) -> None:
    import sys

    assert "this" not in sys.modules  # importing it prints the Zen of Python
    store.append("s", [NewEvent("this:Zen"), NewEvent("this")], 0)
    for strict in (False, True):
        reg = EventRegistry(strict=strict)
        for event in store.read_all():
            try:
                assert reg.decode(event) is event
            except UnknownEventType:
                assert strict
    assert "this" not in sys.modules


@pytest.mark.parametrize(
    ("version", "data", "reason"),
    [
        (4, {"symbol": "x"}, "newer"),
        (3, {"symbol": "x"}, "does not fit"),
        (3, {"symbol": "x", "organism": "y", "essential": True, "extra": 1}, "does not fit"),
    ],
)
def test_undecodable_events_raise_with_their_position(
    version: int, data: dict[str, Any], reason: str
) -> None:
    event = RecordedEvent(3, "s", 1, "GeneAdded", data, None, {}, version, datetime.now(UTC), "")
    with pytest.raises(EventDecodeError, match=reason) as info:
        _registry().decode(event)
    assert info.value.position == 3


def test_missing_upcaster_is_reported() -> None:
    reg = EventRegistry()

    @reg.register("X", version=2)
    @dataclasses.dataclass
    class X:
        a: int

    event = RecordedEvent(1, "s", 1, "X", {"a": 1}, None, {}, 1, datetime.now(UTC), "")
    with pytest.raises(EventDecodeError, match="no upcaster from v1"):
        reg.decode(event)


def test_registry_refuses_duplicates_and_non_data_classes() -> None:
    reg = EventRegistry()

    @reg.register("A")
    @dataclasses.dataclass
    class A:
        x: int

    with pytest.raises(ConfigurationError):
        reg.register("A")(dataclasses.make_dataclass("B", ["x"]))
    with pytest.raises(ConfigurationError):
        reg.register("C")(A)
    with pytest.raises(ConfigurationError):
        reg.register("D")(dict)
    with pytest.raises(ConfigurationError):
        reg.register("E", version=0)
    with pytest.raises(ConfigurationError):
        reg.encode(object())
    assert reg.names() == ["A"]
    assert reg.type_of(A(1)) == "A"


def test_typed_events_need_a_registry(store: EventStore) -> None:
    @dataclasses.dataclass
    class Plain:
        x: int

    with pytest.raises(ConfigurationError):
        store.append("s", [Plain(1)], 0)


# ---------------------------------------------------------------------- store down


def test_store_down_raises_service_unavailable() -> None:
    engine = sa.create_engine(f"postgresql+psycopg://127.0.0.1:{free_port()}/test")
    s = EventStore(engine, key=KEY)
    with pytest.raises(ServiceUnavailable):
        s.append("s", [ev()], 0)
    with pytest.raises(ServiceUnavailable):
        s.read_all()
    with pytest.raises(ServiceUnavailable):
        s.ping()
    engine.dispose()


@pytest.mark.anyio
async def test_async_store_down_raises_service_unavailable() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"postgresql+asyncpg://127.0.0.1:{free_port()}/test")
    s = AsyncEventStore(engine, key=KEY)
    with pytest.raises(ServiceUnavailable):
        await s.append("s", [ev()], 0)
    with pytest.raises(ServiceUnavailable):
        await s.verify()
    await engine.dispose()
