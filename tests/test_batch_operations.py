"""batch_operations: create, upsert and delete on SQLite and PostgreSQL, sync and async."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import CheckConstraint, Enum, Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import gennet_toolkit.batch_operations as bo
from gennet_toolkit.batch_operations import BatchProcessor, BatchResult, ItemError
from gennet_toolkit.exceptions import (
    BadRequest,
    ConfigurationError,
    Conflict,
    PayloadTooLarge,
    ServiceUnavailable,
)
from tests.services import Database, free_port

SECRET = "s3cr3t-value-never-echoed"


class Base(DeclarativeBase):
    pass


class Sign(enum.Enum):
    activation = "activation"
    repression = "repression"


class Gene(Base):
    __tablename__ = "bo_genes"
    id: Mapped[int] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(16), unique=True)
    organism: Mapped[str] = mapped_column(String(32), default="human")
    note: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


class Upper(sa.TypeDecorator[str]):
    """A custom type the processor cannot check: its bind processor may raise."""

    impl = String(8)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not value.isupper()):
            raise ValueError("not upper case")
        return value


class Tag(Base):
    __tablename__ = "bo_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(Upper)


class Token(Base):
    """A Python callable default: evaluated per row, whatever the INSERT form."""

    __tablename__ = "bo_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(16), unique=True)
    token: Mapped[str] = mapped_column(String(32), default=lambda: uuid.uuid4().hex)


class Edge(Base):
    __tablename__ = "bo_edges"
    id: Mapped[int] = mapped_column(primary_key=True)
    src: Mapped[int] = mapped_column(ForeignKey("bo_genes.id"))
    tgt: Mapped[int] = mapped_column(ForeignKey("bo_genes.id"))
    sign: Mapped[Sign] = mapped_column(Enum(Sign), default=Sign.activation)
    weight: Mapped[float | None] = mapped_column(
        Float, CheckConstraint("weight >= -1 AND weight <= 1", name="bo_weight_range")
    )
    __table_args__ = (UniqueConstraint("src", "tgt"),)


class Membership(Base):
    """A composite primary key, client-supplied."""

    __tablename__ = "bo_members"
    network: Mapped[str] = mapped_column(String(16), primary_key=True)
    gene_id: Mapped[int] = mapped_column(ForeignKey("bo_genes.id"), primary_key=True)
    rank: Mapped[int] = mapped_column(sa.SmallInteger, default=0)


def make_engine(database: Database, *, is_async: bool = False) -> Any:
    engine = database.async_engine() if is_async else database.engine()
    if database.kind == "sqlite":
        sync_engine = engine.sync_engine if is_async else engine

        @sa.event.listens_for(sync_engine, "connect")
        def _fk_on(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute("PRAGMA foreign_keys=ON")

    return engine


@pytest.fixture
def engine(database: Database) -> Iterator[sa.Engine]:
    eng = make_engine(database)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


@pytest.fixture
def genes(factory: sessionmaker[Session]) -> list[int]:
    """Ten genes g0..g9 with ids 1..10."""
    with factory.begin() as s:
        s.add_all(Gene(id=i + 1, symbol=f"g{i}") for i in range(10))
    return list(range(1, 11))


def count(factory: sessionmaker[Session], model: Any) -> int:
    with factory() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


def codes(result: BatchResult) -> dict[int, str]:
    return {e.index: e.code for e in result.failed}


# --------------------------------------------------------------------------- surface


def test_public_names_are_exported() -> None:
    assert set(bo.__all__) == {"BatchProcessor", "BatchResult", "ItemError", "CODES"}
    for name in bo.__all__:
        assert getattr(bo, name).__doc__ or name == "CODES"


def test_results_can_be_built_as_the_design_names_them() -> None:
    result = BatchResult([0, 2], failed=[ItemError(1, "Bad gene.")])
    assert result.counts["total"] == 3
    assert result.status_code == 422  # atomic by default: the failure's status
    assert BatchResult.from_dict(result.to_dict()).failed == result.failed
    partial = BatchResult([0], failed=[ItemError(1, "x", "duplicate")], atomic=False)
    assert partial.status_code == 207
    assert partial.item_results()[1] == {
        "index": 1,
        "status": 409,
        "error": {"code": "duplicate", "detail": "x"},
    }


def test_every_code_has_a_status_and_a_fixed_detail() -> None:
    for code, (status, detail) in bo.CODES.items():
        assert 400 <= status < 500
        assert ItemError.of(0, code).detail == detail


# --------------------------------------------------------------------------- create


def test_atomic_create_writes_everything_and_reports_keys(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene, return_keys=True)
    result = proc.create_many([{"symbol": f"s{i}"} for i in range(25)], chunk_size=10)
    assert result.ok
    assert result.created == list(range(25))
    assert count(factory, Gene) == 25
    with factory() as s:
        by_symbol = dict(s.execute(sa.select(Gene.symbol, Gene.id)).all())
    assert all(result.keys[i] == by_symbol[f"s{i}"] for i in range(25))
    assert result.status_code == 200
    assert result.to_dict()["counts"] == {
        "created": 25,
        "updated": 0,
        "deleted": 0,
        "failed": 0,
        "total": 25,
    }


def test_atomic_create_rejects_a_duplicate_in_the_batch_and_writes_nothing(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene)
    result = proc.create_many([{"symbol": "a"}, {"symbol": "b"}, {"symbol": "a"}])
    assert result.rejected
    assert codes(result) == {2: "duplicate_in_batch"}
    assert result.created == []
    assert count(factory, Gene) == 0
    assert result.status_code == 409


def test_atomic_create_lists_every_failing_index_when_the_database_refuses(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Edge)
    proc.create_many([{"src": 1, "tgt": 2}])
    items = [
        {"src": 3, "tgt": 4},  # fine
        {"src": 1, "tgt": 2},  # exists
        {"src": 5, "tgt": 999},  # missing gene
        {"src": 6, "tgt": 7, "weight": 3.0},  # CHECK constraint
    ]
    result = proc.create_many(items)
    assert result.rejected
    assert codes(result) == {1: "duplicate", 2: "foreign_key", 3: "check_violation"}
    assert count(factory, Edge) == 1  # only the earlier edge
    assert result.to_dict()["outcome"] == "rejected"


def test_per_item_create_writes_the_valid_items_and_explains_the_others(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Edge)
    proc.create_many([{"src": 1, "tgt": 2}])
    items: list[Any] = [
        {"src": 3, "tgt": 4, "weight": 0.5},
        {"src": 1, "tgt": 2},
        {"src": 5, "tgt": 999},
        {"src": 6, "tgt": 7, "weight": 3.0},
        {"src": 3, "tgt": 4},
        {"src": 8, "tgt": 9, "sign": "activation"},
        "not an object",
    ]
    result = proc.create_many(items, atomic=False)
    assert result.created == [0, 5]
    assert codes(result) == {
        1: "duplicate",
        2: "foreign_key",
        3: "check_violation",
        4: "duplicate_in_batch",
        6: "invalid_item",
    }
    assert result.status_code == 207
    assert result.to_dict()["outcome"] == "partial"
    # details are the fixed texts: no database message, no constraint or column values
    assert all(e.detail == bo.CODES[e.code][1] for e in result.failed)
    body = json.dumps(result.to_dict()).lower()
    for leak in ("constraint failed", "bo_weight_range", "bo_edges", "key (", "999"):
        assert leak not in body
    with factory() as s:
        rows = set(s.execute(sa.select(Edge.src, Edge.tgt)))
    assert rows == {(1, 2), (3, 4), (8, 9)}
    assert result.keys[0] != result.keys[5]


@pytest.mark.parametrize(
    ("item", "code", "field"),
    [
        ({"symbol": "ok", SECRET: 1}, "unknown_field", None),
        ({"organism": "x"}, "required", "symbol"),
        ({"symbol": None}, "not_null", "symbol"),
        ({"symbol": 12345}, "invalid_type", "symbol"),
        ({"symbol": SECRET}, "too_long", "symbol"),
        ({"symbol": "a\x00b"}, "invalid_value", "symbol"),
        ({"symbol": "\ud800"}, "invalid_value", "symbol"),
        ({"symbol": "ok", "meta": {"x": float("nan")}}, "invalid_value", "meta"),
        ({"symbol": "ok", "meta": {"x": object()}}, "invalid_value", "meta"),
        ({"symbol": "ok", "id": 2**40}, "out_of_range", "id"),
        ({"symbol": "ok", "id": True}, "invalid_type", "id"),
        ({"symbol": "ok", "id": "7"}, "invalid_type", "id"),
    ],
)
def test_invalid_items_are_reported_with_a_code_and_never_echoed(
    factory: sessionmaker[Session], item: dict[str, Any], code: str, field: str | None
) -> None:
    proc = BatchProcessor(factory, Gene)
    result = proc.create_many([{"symbol": "first"}, item], atomic=False)
    assert result.created == [0]
    assert result.failed == [ItemError.of(1, code, field)]
    body = json.dumps(result.to_dict())
    assert SECRET not in body
    assert "12345" not in body
    assert "7" not in body.replace("status", "")


def test_enum_and_range_checks_follow_the_column_types(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Membership)
    items = [
        {"network": "n1", "gene_id": 1, "rank": 2**15},
        {"network": "n1", "gene_id": 2, "rank": -(2**15)},
    ]
    result = proc.create_many(items, atomic=False)
    assert codes(result) == {0: "out_of_range"}
    assert result.created == [1]
    assert result.keys[1] == ("n1", 2)
    edges = BatchProcessor(factory, Edge).create_many(
        [{"src": 1, "tgt": 2, "sign": "sideways"}], atomic=False
    )
    assert codes(edges) == {0: "invalid_value"}


def test_ints_and_floats_mix_in_a_float_column(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Edge)
    items = [{"src": 1, "tgt": 2, "weight": 1}, {"src": 2, "tgt": 3, "weight": -0.5}]
    assert proc.create_many(items, atomic=False).created == [0, 1]
    with factory() as s:
        assert sorted(s.scalars(sa.select(Edge.weight))) == [-0.5, 1.0]


def test_callable_defaults_are_evaluated_per_row(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Token)
    assert proc.create_many([{"name": f"n{i}"} for i in range(5)], atomic=False).ok
    assert proc.upsert_many([{"name": "n0"}, {"name": "m"}], conflict=["name"]).ok
    with factory() as s:
        assert len(set(s.scalars(sa.select(Token.token)))) == 6


def test_values_a_custom_type_refuses_are_isolated_not_a_500(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Tag)
    items = [{"label": "ACT"}, {"label": "rep"}, {"label": "DUAL"}]
    per_item = proc.create_many(items, atomic=False)
    assert per_item.created == [0, 2]
    assert codes(per_item) == {1: "invalid_value"}
    atomic = proc.create_many(items)
    assert atomic.rejected
    assert codes(atomic) == {1: "invalid_value"}
    assert count(factory, Tag) == 2


def test_fields_guard_against_mass_assignment(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene, fields=["symbol", "note"])
    result = proc.create_many([{"symbol": "a", "id": 99}, {"symbol": "b"}], atomic=False)
    assert codes(result) == {0: "unknown_field"}
    assert result.created == [1]
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, Gene, fields=["symbol", "password"])


def test_per_item_authorisation_refuses_items_individually(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene, authorize=lambda item: item.get("organism") != "mouse")
    items = [{"symbol": "a"}, {"symbol": "b", "organism": "mouse"}]
    per_item = proc.create_many(items, atomic=False)
    assert per_item.created == [0]
    assert codes(per_item) == {1: "forbidden"}
    atomic = proc.create_many([{"symbol": "c"}, {"symbol": "d", "organism": "mouse"}])
    assert atomic.rejected
    assert atomic.status_code == 403
    assert count(factory, Gene) == 1


def test_per_item_mode_is_set_based_not_a_savepoint_per_row(
    engine: sa.Engine, factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Edge)
    # 10 existing edges; the batch repeats them among 990 new ones (1% conflicts).
    proc.create_many([{"src": 1, "tgt": i, "weight": 0.1} for i in range(1, 11)])
    items = [{"src": s, "tgt": t} for s in range(1, 11) for t in range(1, 101)]
    with factory.begin() as s:
        s.add_all(Gene(id=i, symbol=f"x{i}") for i in range(11, 101))
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    result = proc.create_many(items, atomic=False, chunk_size=250)
    assert len(result.created) == 990
    assert set(codes(result).values()) == {"duplicate"}
    savepoints = [s for s in statements if s.upper().startswith("SAVEPOINT")]
    assert len(savepoints) == 4  # one per chunk
    assert len(statements) < 40
    inserts = [s for s in statements if s.upper().startswith("INSERT")]
    if engine.dialect.name == "postgresql":  # one INSERT … SELECT FROM unnest() per chunk
        assert len(inserts) == 4
        assert all("unnest(" in s for s in inserts)


def test_the_fallback_bisects_only_the_failing_chunk(
    engine: sa.Engine, factory: sessionmaker[Session], genes: list[int]
) -> None:
    """CHECK constraints are not pre-checked: the database finds them, bisection isolates."""
    proc = BatchProcessor(factory, Edge)
    items = [
        {"src": s, "tgt": t, "weight": 5.0 if (s, t) == (4, 7) else 0.0}
        for s in range(1, 11)
        for t in range(1, 11)
    ]
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    result = proc.create_many(items, atomic=False, chunk_size=50)
    assert codes(result) == {36: "check_violation"}
    assert len(result.created) == 99
    assert count(factory, Edge) == 99
    # log2(50) levels of bisection in one chunk, never 100 savepoints
    assert sum(s.upper().startswith("SAVEPOINT") for s in statements) < 20


# --------------------------------------------------------------------------- upsert


def test_upsert_tells_created_from_updated(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene, conflict=["symbol"])
    proc.create_many([{"symbol": "a", "note": "old"}, {"symbol": "b", "note": "old"}])
    result = proc.upsert_many(
        [{"symbol": "a", "note": "new"}, {"symbol": "c", "note": "new"}, {"symbol": "b"}]
    )
    assert result.updated == [0, 2]
    assert result.created == [1]
    with factory() as s:
        notes = dict(s.execute(sa.select(Gene.symbol, Gene.note)).all())
    # b omitted note: an upsert never nulls columns the item did not send
    assert notes == {"a": "new", "b": "old", "c": "new"}


def test_upsert_updates_only_the_named_columns(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene)
    proc.create_many([{"id": 1, "symbol": "a", "organism": "human", "note": "n"}])
    result = proc.upsert_many(
        [{"id": 1, "symbol": "a", "organism": "mouse", "note": "changed"}], update=["note"]
    )
    assert result.updated == [0]
    assert result.keys == {0: 1}
    with factory() as s:
        gene = s.get_one(Gene, 1)
        assert (gene.organism, gene.note) == ("human", "changed")


def test_upsert_rejects_items_without_the_key_and_repeated_keys(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene, conflict=["symbol"])
    items = [{"symbol": "a"}, {"note": "x", "organism": "y", "symbol": None}, {"symbol": "a"}]
    result = proc.upsert_many(items, atomic=False)
    assert result.created == [0]
    assert codes(result) == {1: "not_null", 2: "duplicate_in_batch"}
    atomic = proc.upsert_many([{"symbol": "z"}, {"symbol": "z"}])
    assert atomic.rejected
    assert count(factory, Gene) == 1


def test_upsert_per_item_isolates_rows_the_database_refuses(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Edge, conflict=["src", "tgt"])
    items = [{"src": 1, "tgt": 2, "weight": 0.5}, {"src": 2, "tgt": 3, "weight": 9.0}]
    result = proc.upsert_many(items, atomic=False)
    assert result.created == [0]
    assert codes(result) == {1: "check_violation"}
    atomic = proc.upsert_many([{"src": 1, "tgt": 2, "weight": 0.7}, items[1]])
    assert atomic.rejected
    assert codes(atomic) == {1: "check_violation"}
    with factory() as s:
        assert s.scalar(sa.select(Edge.weight)) == 0.5


def test_upsert_conflict_must_be_a_unique_key(factory: sessionmaker[Session]) -> None:
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, Gene, conflict=["organism"])
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, Gene).upsert_many([{"symbol": "a"}], conflict=["nope"])


# --------------------------------------------------------------------------- delete


def test_delete_by_primary_key_reports_missing_and_referenced_rows(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    BatchProcessor(factory, Edge).create_many([{"src": 1, "tgt": 2}])
    proc = BatchProcessor(factory, Gene)
    result = proc.delete_many([3, 1, 404, 3, "x"], atomic=False)
    assert result.deleted == [0]
    assert result.keys == {0: 3}
    assert codes(result) == {
        1: "still_referenced",
        2: "not_found",
        3: "duplicate_in_batch",
        4: "invalid_type",
    }
    assert count(factory, Gene) == 9


def test_atomic_delete_deletes_nothing_when_one_id_is_missing(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Gene)
    result = proc.delete_many([1, 2, 404])
    assert result.rejected
    assert codes(result) == {2: "not_found"}
    assert result.status_code == 404
    assert count(factory, Gene) == 10
    BatchProcessor(factory, Edge).create_many([{"src": 5, "tgt": 6}])
    referenced = proc.delete_many([4, 5])
    assert referenced.rejected
    assert codes(referenced) == {1: "still_referenced"}
    assert count(factory, Gene) == 10
    assert proc.delete_many([1, 2]).deleted == [0, 1]


def test_delete_where_narrows_the_ids_without_revealing_other_rows(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    proc = BatchProcessor(factory, Gene)
    with factory.begin() as s:
        s.execute(sa.update(Gene).where(Gene.id > 5).values(organism="mouse"))
    result = proc.delete_many([1, 6], where=Gene.organism == "human", atomic=False)
    assert result.deleted == [0]
    assert codes(result) == {1: "not_found"}


def test_delete_with_a_composite_key(factory: sessionmaker[Session], genes: list[int]) -> None:
    proc = BatchProcessor(factory, Membership)
    proc.create_many([{"network": "n", "gene_id": g} for g in (1, 2, 3)])
    result = proc.delete_many(
        [("n", 1), {"network": "n", "gene_id": 2}, ["n"], ("m", 3)], atomic=False
    )
    assert result.deleted == [0, 1]
    assert codes(result) == {2: "invalid_type", 3: "not_found"}


def test_there_is_no_filter_based_delete(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene)
    with pytest.raises(TypeError):
        proc.delete_many(where=Gene.id > 0)  # type: ignore[call-arg]
    with pytest.raises(BadRequest):
        proc.delete_many({"organism": "human"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- limits


def test_too_many_items_is_a_413(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene, max_items=3)
    with pytest.raises(PayloadTooLarge) as info:
        proc.create_many([{"symbol": str(i)} for i in range(4)])
    assert info.value.status_code == 413
    assert info.value.extra == {"max_items": 3}
    with pytest.raises(PayloadTooLarge):
        proc.delete_many([1, 2, 3, 4])
    assert count(factory, Gene) == 0


def test_a_batch_must_be_a_list(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene)
    for bad in ("abc", {"symbol": "a"}, 5):
        with pytest.raises(BadRequest):
            proc.create_many(bad)  # type: ignore[arg-type]


def test_bad_configuration_is_refused(factory: sessionmaker[Session]) -> None:
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, Gene, max_items=0)
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, Gene, chunk_size=0)
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, object())
    with pytest.raises(ConfigurationError):
        BatchProcessor(factory, Gene, idempotency_ttl=0)


def test_from_env_reads_the_caps(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_BATCH_MAX_ITEMS", "7")
    monkeypatch.setenv("APP_BATCH_CHUNK_SIZE", "3")
    proc = BatchProcessor.from_env(factory, Gene, prefix="APP_", max_bytes=99)
    assert (proc.max_items, proc.chunk_size, proc.max_bytes) == (7, 3, 99)
    monkeypatch.setenv("APP_BATCH_MAX_BYTES", "lots")
    with pytest.raises(ConfigurationError):
        BatchProcessor.from_env(factory, Gene, prefix="APP_")


def test_an_unreachable_database_is_a_503() -> None:
    engine = sa.create_engine(
        f"postgresql+psycopg://127.0.0.1:{free_port()}/x", connect_args={"connect_timeout": 2}
    )
    proc = BatchProcessor(sessionmaker(engine), Gene)
    with pytest.raises(ServiceUnavailable) as info:
        proc.create_many([{"symbol": "a"}])
    assert info.value.status_code == 503
    assert "127.0.0.1" not in info.value.detail


# --------------------------------------------------------------------------- hooks


def test_before_commit_runs_in_the_same_transaction(factory: sessionmaker[Session]) -> None:
    audit: list[tuple[str, int]] = []

    def record(session: Session, result: BatchResult) -> None:
        assert session.in_transaction()
        audit.extend((result.operation, i) for i in result.created)

    proc = BatchProcessor(factory, Gene, before_commit=record)
    proc.create_many([{"symbol": "a"}, {"symbol": "b"}, {"symbol": "a"}], atomic=False)
    assert audit == [("create", 0), ("create", 1)]

    def explode(session: Session, result: BatchResult) -> None:
        raise RuntimeError("audit store down")

    failing = BatchProcessor(factory, Gene, before_commit=explode)
    with pytest.raises(RuntimeError):
        failing.create_many([{"symbol": "c"}])
    assert count(factory, Gene) == 2  # the write went with the failed audit


# --------------------------------------------------------------------------- idempotency


def test_the_same_idempotency_key_and_payload_replays_without_writing(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene, return_keys=True)
    items = [{"symbol": "a"}, {"symbol": "b"}]
    first = proc.create_many(items, idempotency_key="req-1")
    again = proc.create_many(items, idempotency_key="req-1")
    assert count(factory, Gene) == 2
    assert again.replayed
    assert not first.replayed
    assert again.created == first.created
    assert again.keys == first.keys
    assert again.to_dict()["results"] == first.to_dict()["results"]


def test_an_idempotency_key_reused_with_another_payload_is_a_409(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene)
    proc.create_many([{"symbol": "a"}], idempotency_key="req-1")
    with pytest.raises(Conflict) as info:
        proc.create_many([{"symbol": "b"}], idempotency_key="req-1")
    assert info.value.status_code == 409
    assert info.value.code == "idempotency_key_reused"
    with pytest.raises(Conflict):
        proc.create_many([{"symbol": "a"}], atomic=False, idempotency_key="req-1")
    assert count(factory, Gene) == 1


def test_rejected_batches_do_not_consume_the_key(factory: sessionmaker[Session]) -> None:
    proc = BatchProcessor(factory, Gene)
    proc.create_many([{"symbol": "a"}])
    assert proc.create_many([{"symbol": "a"}], idempotency_key="k").rejected
    with factory.begin() as s:
        s.execute(sa.delete(Gene))
    assert proc.create_many([{"symbol": "a"}], idempotency_key="k").created == [0]


def test_expired_idempotency_keys_run_again_and_are_purged(
    factory: sessionmaker[Session],
) -> None:
    proc = BatchProcessor(factory, Gene, idempotency_ttl=0.001)
    proc.create_many([{"symbol": "a"}], idempotency_key="k")
    with factory.begin() as s:
        s.execute(sa.update(proc._idem_table).values(expires_at=0))
    result = proc.create_many([{"symbol": "a"}], idempotency_key="k")
    assert not result.replayed
    assert result.rejected
    proc.purge_expired()
    with factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(proc._idem_table)) == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "bad key", "é", 5])
def test_malformed_idempotency_keys_are_a_400(factory: sessionmaker[Session], key: Any) -> None:
    with pytest.raises(BadRequest) as info:
        BatchProcessor(factory, Gene).create_many([{"symbol": "a"}], idempotency_key=key)
    assert info.value.code == "invalid_idempotency_key"
    assert len(str(key)) < 3 or str(key) not in info.value.detail


def test_idempotency_keys_are_scoped_per_table(
    factory: sessionmaker[Session], genes: list[int]
) -> None:
    BatchProcessor(factory, Gene).create_many([{"symbol": "zz"}], idempotency_key="k")
    edges = BatchProcessor(factory, Edge).create_many([{"src": 1, "tgt": 2}], idempotency_key="k")
    assert edges.created == [0]
    assert not edges.replayed


# --------------------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_processor_runs_the_same_plans(database: Database) -> None:
    engine = make_engine(database, is_async=True)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    factory = async_sessionmaker(engine)
    try:
        genes = BatchProcessor(factory, Gene, conflict=["symbol"], return_keys=True)
        created = await genes.acreate_many([{"symbol": f"a{i}"} for i in range(5)])
        assert created.created == [0, 1, 2, 3, 4]
        rejected = await genes.acreate_many([{"symbol": "new"}, {"symbol": "a1"}])
        assert rejected.rejected
        assert codes(rejected) == {1: "duplicate"}
        async with factory() as s:
            assert await s.scalar(sa.select(sa.func.count()).select_from(Gene)) == 5
        assert len(set(created.keys.values())) == 5
        edges = BatchProcessor(factory, Edge)
        ids = list(created.keys.values())
        per_item = await edges.acreate_many(
            [{"src": ids[0], "tgt": ids[1]}, {"src": ids[0], "tgt": 10_000}], atomic=False
        )
        assert per_item.created == [0]
        assert codes(per_item) == {1: "foreign_key"}
        upserted = await genes.aupsert_many([{"symbol": "a0", "note": "n"}, {"symbol": "b"}])
        assert upserted.updated == [0]
        assert upserted.created == [1]
        deleted = await genes.adelete_many([ids[4], 10_000], atomic=False)
        assert deleted.deleted == [0]
        assert codes(deleted) == {1: "not_found"}
        replay = await genes.acreate_many([{"symbol": "k"}], idempotency_key="ak")
        again = await genes.acreate_many([{"symbol": "k"}], idempotency_key="ak")
        assert again.replayed
        assert again.keys == replay.keys
        await genes.apurge_expired()
        with pytest.raises(ConfigurationError):
            genes.create_many([{"symbol": "sync"}])
    finally:
        await engine.dispose()


def test_async_methods_need_an_async_factory(factory: sessionmaker[Session]) -> None:
    import asyncio

    proc = BatchProcessor(factory, Gene)
    with pytest.raises(ConfigurationError):
        asyncio.run(proc.acreate_many([{"symbol": "a"}]))


# --------------------------------------------------------------------------- property


_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=2),
)
_item = st.one_of(
    st.dictionaries(st.sampled_from(["id", "symbol", "organism", "note", "extra"]), _value),
    _value,
)


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(items=st.lists(_item, max_size=12), atomic=st.booleans())
def test_any_batch_gets_a_verdict_for_every_index_and_never_raises(
    factory: sessionmaker[Session], items: list[Any], atomic: bool
) -> None:
    with factory.begin() as s:
        s.execute(sa.delete(Gene))
    result = BatchProcessor(factory, Gene).create_many(items, atomic=atomic)
    written = result.created
    failed = [e.index for e in result.failed]
    assert sorted(written + failed) == (list(range(len(items))) if not result.rejected else failed)
    assert len(set(failed)) == len(failed)
    assert count(factory, Gene) == len(written)
    assert result.status_code in {200, 207, 403, 404, 409, 422}
    json.dumps(result.to_dict())  # always serialisable
