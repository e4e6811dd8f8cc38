"""Keyset pagination on SQLite and PostgreSQL: every row exactly once, in order."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
)

from gennet_toolkit.exceptions import BadRequest, ConfigurationError
from gennet_toolkit.pagination import CursorPaginator, InvalidPageSize, Page
from tests.services import Database


class Base(DeclarativeBase):
    pass


class Gene(Base):
    __tablename__ = "pg_gene"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    symbol: Mapped[str | None] = mapped_column(String(20), nullable=True)
    weight: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    edges: Mapped[list[Edge]] = relationship(order_by="Edge.id")


class Edge(Base):
    __tablename__ = "pg_edge"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    gene_id: Mapped[int] = mapped_column(ForeignKey("pg_gene.id"), nullable=False)
    sign: Mapped[str] = mapped_column(String(10), nullable=False)


core = MetaData()
typed = Table(
    "pg_typed",
    core,
    Column("id", Uuid, primary_key=True),
    Column("at", String(40), nullable=True),
    Column("amount", Numeric(12, 4), nullable=True),
)

# Sort specs and the Python key that reproduces each one (NULLS LAST unless stated).
SPECS: dict[str, tuple[list[Any], Callable[[dict[str, Any]], Any]]] = {
    "score": ([Gene.score], lambda r: ((r["score"] is None), r["score"] or 0, r["id"])),
    "-score,symbol": (
        [Gene.score.desc(), Gene.symbol],
        lambda r: (
            r["score"] is None,
            -(r["score"] or 0),
            r["symbol"] is None,
            r["symbol"] or "",
            r["id"],
        ),
    ),
    "-symbol nulls first,score": (
        [Gene.symbol.desc().nulls_first(), "score"],
        lambda r: (
            r["symbol"] is not None,
            {"b": 0, "ab": 1, "a": 2, None: 3}[r["symbol"]],
            r["score"] is None,
            r["score"] or 0,
            r["id"],
        ),
    ),
    "-id": ([Gene.id.desc()], lambda r: -r["id"]),
}

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "score": st.sampled_from([None, None, 0, 1, 1, 2]),
            "symbol": st.sampled_from([None, "a", "b", "ab"]),
        }
    ),
    max_size=30,
)


@pytest.fixture
def engine(database: Database) -> Iterator[Any]:
    eng = database.engine()
    Base.metadata.create_all(eng)
    core.create_all(eng)
    yield eng
    eng.dispose()


def _load(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    session.execute(delete(Edge))
    session.execute(delete(Gene))
    data = [dict(r, id=i + 1, weight=float(i % 3)) for i, r in enumerate(rows)]
    if data:
        session.execute(insert(Gene), data)
    session.commit()
    return data


def walk_forward(pager: CursorPaginator, session: Session, stmt: Any, size: int) -> list[Page[Any]]:
    pages, cursor = [], None
    while True:
        page = pager.paginate(session, stmt, cursor, size)
        pages.append(page)
        if not page.has_next:
            return pages
        assert page.next_cursor is not None
        cursor = page.next_cursor
        assert len(pages) < 200, "paging does not terminate"


def ids(items: list[Any]) -> list[int]:
    return [g.id for g in items]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=rows_strategy, spec=st.sampled_from(sorted(SPECS)))
def test_every_row_exactly_once_in_order_forward_and_backward(
    engine: Any, rows: list[dict[str, Any]], spec: str
) -> None:
    order_by, key = SPECS[spec]
    pager = CursorPaginator(order_by=order_by, max_page_size=50)
    with Session(engine) as session:
        data = _load(session, rows)
        expected = [r["id"] for r in sorted(data, key=key)]
        for size in (1, 2, 3, 7, 50):
            pages = walk_forward(pager, session, select(Gene), size)
            got = [i for p in pages for i in ids(p.items)]
            assert got == expected, (size, spec)
            assert all(len(p.items) == size for p in pages[:-1])
            # Back from the last page to the first by prev cursors.
            back: list[list[int]] = [ids(pages[-1].items)]
            page = pages[-1]
            while page.has_prev:
                assert page.prev_cursor is not None
                page = pager.paginate(session, select(Gene), page.prev_cursor, size)
                back.append(ids(page.items))
                assert len(back) < 200
            assert [i for chunk in reversed(back) for i in chunk] == expected, (size, spec)
            assert back[-1] == ids(pages[0].items)


def test_first_page_flags_and_cursors(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i, "symbol": None} for i in range(5)])
        pager = CursorPaginator(order_by=[Gene.score], page_size=2)
        first = pager.paginate(session, select(Gene))
        assert (first.has_prev, first.has_next, first.prev_cursor) == (False, True, None)
        assert first.page_info["startCursor"] is not None
        second = pager.paginate(session, select(Gene), first.next_cursor)
        assert (second.has_prev, second.has_next) == (True, True)
        assert ids(second.items) == [3, 4]
        again = pager.paginate(session, select(Gene), second.prev_cursor)
        assert ids(again.items) == ids(first.items)
        assert (again.has_prev, again.has_next) == (False, True)


def test_relay_edges_carry_a_cursor_per_item(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i % 2, "symbol": None} for i in range(6)])
        pager = CursorPaginator(order_by=[Gene.score], page_size=4)
        page = pager.paginate(session, select(Gene))
        edges = page.edges()
        assert [g.id for _, g in edges] == [1, 3, 5, 2]
        from_edge = pager.paginate(session, select(Gene), edges[-1][0])
        assert ids(from_edge.items) == ids(
            pager.paginate(session, select(Gene), page.end_cursor).items
        )
        after_second = pager.paginate(session, select(Gene), edges[1][0], 2)
        assert ids(after_second.items) == [5, 2]


def test_empty_page_after_deletion_still_leads_back(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i, "symbol": None} for i in range(4)])
        pager = CursorPaginator(order_by=[Gene.score], page_size=2)
        first = pager.paginate(session, select(Gene))
        session.execute(delete(Gene).where(Gene.id > 2))
        session.commit()
        empty = pager.paginate(session, select(Gene), first.next_cursor)
        assert empty.items == []
        assert not empty.has_next
        assert empty.has_prev
        back = pager.paginate(session, select(Gene), empty.prev_cursor)
        assert ids(back.items) == [1, 2]  # the row at the cursor position is not lost


def test_table_with_no_rows_gives_one_empty_page(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [])
        page = CursorPaginator(order_by=[Gene.score]).paginate(session, select(Gene))
        assert page.items == []
        assert not page.has_next
        assert not page.has_prev
        assert page.next_cursor is None
        assert page.prev_cursor is None


def test_mixed_directions_match_python_sort(engine: Any) -> None:
    rows = [{"score": i % 3, "symbol": "abc"[i % 2]} for i in range(20)]
    with Session(engine) as session:
        data = _load(session, rows)
        pager = CursorPaginator(order_by=[Gene.score.desc(), Gene.symbol.asc()])
        got = [i for p in walk_forward(pager, session, select(Gene), 3) for i in ids(p.items)]
        expected = sorted(data, key=lambda r: (-r["score"], r["symbol"], r["id"]))
        assert got == [r["id"] for r in expected]


def test_nulls_first_and_last_are_the_same_on_every_database(engine: Any) -> None:
    rows = [{"score": s, "symbol": None} for s in (2, None, 1, None)]
    with Session(engine) as session:
        _load(session, rows)
        last = CursorPaginator(order_by=[Gene.score]).paginate(session, select(Gene))
        first = CursorPaginator(order_by=[Gene.score], nulls="first").paginate(
            session, select(Gene)
        )
        desc = CursorPaginator(order_by=[Gene.score.desc()]).paginate(session, select(Gene))
        assert ids(last.items) == [3, 1, 2, 4]
        assert ids(first.items) == [2, 4, 3, 1]
        assert ids(desc.items) == [1, 3, 2, 4]


def test_core_select_with_one_to_many_join_returns_each_row_once(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": 1, "symbol": "x"} for _ in range(4)])
        session.execute(
            insert(Edge),
            [{"id": i, "gene_id": 1 + i % 2, "sign": "+-"[i % 2]} for i in range(1, 9)],
        )
        session.commit()
        g, e = Gene.__table__, Edge.__table__
        stmt = select(g.c.id, g.c.score, e.c.id.label("edge_id")).join(e, e.c.gene_id == g.c.id)
        # The sort key repeats for every edge: the edge's primary key keeps rows apart.
        pager = CursorPaginator(order_by=[g.c.score], include_total=True)
        pages = walk_forward(pager, session, stmt, 3)
        got = [(r.id, r.edge_id) for p in pages for r in p.items]
        assert sorted(got) == sorted((1 + i % 2, i) for i in range(1, 9))
        assert len(got) == len(set(got)) == 8
        assert pages[0].total == 8
        assert pages[0].items[0]._fields == ("id", "score", "edge_id")


def test_outer_join_sort_on_the_nullable_side(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": 1, "symbol": "x"} for _ in range(5)])
        session.execute(insert(Edge), [{"id": 10, "gene_id": 2, "sign": "b"}])
        session.execute(insert(Edge), [{"id": 11, "gene_id": 4, "sign": "a"}])
        session.commit()
        stmt = select(Gene.id, Edge.sign).outerjoin(Edge, Edge.gene_id == Gene.id)
        # Edge.sign is NOT NULL in its table, but NULL for genes without edges.
        pager = CursorPaginator(order_by=[Edge.sign])
        got = [tuple(r) for p in walk_forward(pager, session, stmt, 1) for r in p.items]
        assert got == [(4, "a"), (2, "b"), (1, None), (3, None), (5, None)]


def test_orm_join_with_explicit_tiebreak(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i, "symbol": "x"} for i in range(3)])
        session.execute(insert(Edge), [{"id": i, "gene_id": 1, "sign": "a"} for i in range(5)])
        session.commit()
        stmt = select(Edge).join(Gene, Gene.id == Edge.gene_id)
        pager = CursorPaginator(order_by=[Gene.symbol], tiebreak=[Edge.id.desc()])
        got = [x.id for p in walk_forward(pager, session, stmt, 2) for x in p.items]
        assert got == [4, 3, 2, 1, 0]


def test_joined_eager_load_pages_each_entity_once_with_its_collection(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i % 2, "symbol": "x"} for i in range(6)])
        session.execute(
            insert(Edge), [{"id": i, "gene_id": 1 + i % 3, "sign": "a"} for i in range(9)]
        )
        session.commit()
        stmt = select(Gene).options(joinedload(Gene.edges))
        pager = CursorPaginator(order_by=[Gene.score.desc()])
        pages = walk_forward(pager, session, stmt, 2)
        got = [g.id for p in pages for g in p.items]
        assert got == [2, 4, 6, 1, 3, 5]
        by_id = {g.id: [e.id for e in g.edges] for p in pages for g in p.items}
        assert by_id[1] == [0, 3, 6]
        assert by_id[4] == []


def test_relationship_join_adds_the_joined_primary_key_as_tiebreak(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": 1, "symbol": "x"} for _ in range(3)])
        session.execute(
            insert(Edge), [{"id": i, "gene_id": 1 + i % 2, "sign": "ab"[i % 2]} for i in range(6)]
        )
        session.commit()
        # One row per (gene, edge): the gene repeats, the edge id keeps rows apart.
        stmt = select(Gene.id, Edge.id.label("edge")).join(Gene.edges).where(Edge.sign == "a")
        pager = CursorPaginator(order_by=[Gene.score])
        got = [tuple(r) for p in walk_forward(pager, session, stmt, 1) for r in p.items]
        assert got == [(1, 0), (1, 2), (1, 4)]


def test_cursor_for_explicit_values_starts_after_that_row(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i % 3, "symbol": None} for i in range(9)])
        pager = CursorPaginator(order_by=[Gene.score], page_size=3)
        cursor = pager.cursor_for(select(Gene), (1, 4))  # score 1, id 4
        page = pager.paginate(session, select(Gene), cursor)
        assert ids(page.items) == [5, 8, 3]
        with pytest.raises(ValueError, match="values"):
            pager.cursor_for(select(Gene), (1,))


def test_grouped_subquery_needs_and_takes_an_explicit_tiebreak(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i % 4 or None, "symbol": None} for i in range(11)])
        sub = select(Gene.score, func.count().label("n")).group_by(Gene.score).subquery("per_score")
        with pytest.raises(ConfigurationError, match="tiebreak"):
            CursorPaginator(order_by=[sub.c.n.desc()]).paginate(session, select(sub))
        pager = CursorPaginator(order_by=[sub.c.n.desc()], tiebreak=[sub.c.score])
        pages = walk_forward(pager, session, select(sub), 1)
        got = [tuple(r) for p in pages for r in p.items]
        assert got == [(1, 3), (2, 3), (None, 3), (3, 2)]  # NULLs last in the tiebreak too


def test_sort_by_selected_column_name_and_unknown_name_is_400(engine: Any) -> None:
    with Session(engine) as session:
        _load(session, [{"score": i, "symbol": None} for i in range(3)])
        pager = CursorPaginator(sortable={"score", "symbol"})
        page = pager.paginate(session, select(Gene), order_by=["-score"])
        assert ids(page.items) == [3, 2, 1]
        with pytest.raises(BadRequest) as info:
            pager.paginate(session, select(Gene), order_by=["password_hash"])
        assert info.value.code == "invalid_sort"
        assert "password_hash" not in info.value.detail


def test_typed_sort_keys_round_trip_through_cursors(engine: Any, database: Database) -> None:
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    rows = [
        {
            "id": uuid.UUID(int=(i * 7919) % 23 + 1),
            "at": (base + dt.timedelta(minutes=i % 4)).isoformat(),
            "amount": Decimal(i % 5) / 4 if i % 6 else None,
        }
        for i in range(23)
    ]
    with Session(engine) as session:
        session.execute(insert(typed), rows)
        session.commit()
        order = [typed.c.amount.desc()] if database.kind == "postgres" else [typed.c.at]
        pager = CursorPaginator(order_by=order)
        got = [r.id for p in walk_forward(pager, session, select(typed), 4) for r in p.items]
        assert sorted(got) == sorted(r["id"] for r in rows)
        assert len(got) == 23


def test_page_size_out_of_bounds_is_400(engine: Any) -> None:
    pager = CursorPaginator(page_size=5, max_page_size=10)
    with Session(engine) as session:
        for bad in (0, -1, 11, "abc", "", "1e3", True):
            with pytest.raises(InvalidPageSize) as info:
                pager.paginate(session, select(Gene), page_size=bad)
            assert info.value.status_code == 400
    assert pager.check_page_size("10") == 10
    assert pager.query_args({"page_size": "3", "cursor": ""}) == (None, 3)


def test_unsupported_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        CursorPaginator(page_size=600, max_page_size=500)
    with pytest.raises(ConfigurationError):
        CursorPaginator(secret="short")
    with pytest.raises(ConfigurationError):
        CursorPaginator(nulls="middle")  # type: ignore[arg-type]


def test_from_env_reads_sizes_secret_and_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PAGINATION_PAGE_SIZE", "20")
    monkeypatch.setenv("APP_PAGINATION_MAX_PAGE_SIZE", "100")
    monkeypatch.setenv("APP_PAGINATION_SECRET", "k" * 32 + ",old-" + "o" * 20)
    monkeypatch.setenv("APP_PAGINATION_MAX_AGE", "3600")
    monkeypatch.setenv("APP_PAGINATION_ENCRYPT", "true")
    pager = CursorPaginator.from_env(prefix="APP_", order_by=[Gene.score])
    assert pager.codec.encrypted
    assert (pager.page_size, pager.max_page_size) == (20, 100)
    assert pager.codec.signed
    assert pager.codec.max_age == 3600
    assert pager.order_by == (Gene.score,)
    monkeypatch.setenv("APP_PAGINATION_PAGE_SIZE", "lots")
    with pytest.raises(ConfigurationError):
        CursorPaginator.from_env(prefix="APP_")


@pytest.mark.anyio
async def test_async_session_pages_like_the_sync_one(engine: Any, database: Database) -> None:
    rows = [{"score": [None, 1, 2][i % 3], "symbol": None} for i in range(17)]
    with Session(engine) as session:
        data = _load(session, rows)
    expected = [r["id"] for r in sorted(data, key=SPECS["score"][1])]
    aengine = database.async_engine()
    pager = CursorPaginator(order_by=[Gene.score], secret="s" * 32, include_total=True)
    try:
        async with AsyncSession(aengine) as session:
            got, cursor = [], None
            while True:
                page = await pager.apaginate(session, select(Gene), cursor, 4)
                got += ids(page.items)
                assert page.total == 17
                if not page.has_next:
                    break
                cursor = page.next_cursor
            assert got == expected
            back = await pager.apaginate(session, select(Gene), page.prev_cursor, 4)
            assert ids(back.items) == expected[12:16]
            async with aengine.connect() as conn:  # Core rows on an AsyncConnection
                core_page = await pager.apaginate(conn, select(Gene.__table__), None, 4)
                assert [r.id for r in core_page.items] == expected[:4]
    finally:
        await aengine.dispose()
