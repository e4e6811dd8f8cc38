"""Client sorts are allowlisted: hidden columns are never sort oracles (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import DateTime, ForeignKey, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gennet_toolkit.error_handler import install_error_handlers
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.pagination import CursorPaginator, InvalidCursor, InvalidSort
from tests.services import Database


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "pgs_user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(80), nullable=False)


class Post(Base):
    __tablename__ = "pgs_post"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("pgs_user.id"), nullable=False)


T0 = dt.datetime(2026, 1, 1)
# Names ascending, password hashes in the opposite order: a sort on the hash would show.
ROWS = [
    {
        "id": i,
        "name": f"user{i:02d}",
        "created_at": T0 + dt.timedelta(days=i % 3),
        "password_hash": f"h{20 - i:02d}",
    }
    for i in range(1, 11)
]


@pytest.fixture
def engine(database: Database) -> Iterator[Any]:
    eng = database.engine()
    Base.metadata.create_all(eng)
    with Session(eng) as s:
        s.add_all(User(**r) for r in ROWS)
        s.commit()
    yield eng
    eng.dispose()


def all_ids(pager: CursorPaginator, session: Session, stmt: Any, **kw: Any) -> list[int]:
    out: list[int] = []
    cursor = None
    while True:
        page = pager.paginate(session, stmt, cursor, 3, **kw)
        out += [u.id for u in page.items]
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_client_sort_pages_by_the_allowed_keys(engine: Any) -> None:
    pager = CursorPaginator(sortable={"name", "created_at"})
    with Session(engine) as s:
        got = all_ids(pager, s, select(User), sort="-created_at,name")
    want = sorted(ROWS, key=lambda r: (-r["created_at"].timestamp(), r["name"]))
    assert got == [r["id"] for r in want]


@pytest.mark.parametrize(
    "sort",
    [
        "-password_hash",
        "password_hash",
        "name,password_hash",
        "+password_hash",
        " -password_hash ",
    ],
)
def test_hidden_column_is_refused_as_a_client_sort(engine: Any, sort: str) -> None:
    pager = CursorPaginator(sortable={"name", "created_at"})
    with Session(engine) as s, pytest.raises(InvalidSort) as info:
        pager.paginate(s, select(User), sort=sort)
    problem = json.dumps(info.value.to_problem())
    assert info.value.status_code == 400
    assert info.value.code == "invalid_sort"
    assert "password" not in problem  # never echoed
    assert "created_at, name" in info.value.detail  # the allowed keys are listed


def test_hidden_column_is_refused_in_a_per_call_order_by(engine: Any) -> None:
    pager = CursorPaginator(sortable={"name"})
    with Session(engine) as s:
        assert all_ids(pager, s, select(User), order_by=["-name"]) == list(range(10, 0, -1))
        with pytest.raises(InvalidSort):
            pager.paginate(s, select(User), order_by=["-password_hash"])


def test_client_sort_without_an_allowlist_is_a_configuration_error(engine: Any) -> None:
    pager = CursorPaginator()
    with Session(engine) as s:
        with pytest.raises(ConfigurationError, match="sortable"):
            pager.paginate(s, select(User), sort="-password_hash")
        with pytest.raises(ConfigurationError, match="sortable"):
            pager.paginate(s, select(User), sort="")
        with pytest.raises(ConfigurationError, match="sortable"):
            pager.paginate(s, select(User), order_by=["-password_hash"])


def test_developer_order_by_in_the_constructor_is_not_checked(engine: Any) -> None:
    # The developer's own sort may use any column (it is in the code, not the request).
    pager = CursorPaginator(order_by=["-password_hash"], sortable={"name"})
    with Session(engine) as s:
        assert all_ids(pager, s, select(User)) == list(range(1, 11))
        # ...and an empty client sort keeps it.
        assert all_ids(pager, s, select(User), sort="  ") == list(range(1, 11))


@pytest.mark.parametrize(
    "sort",
    ["name,name", "name,-name", "name,", ",name", "-", "--name", "name;drop", "x" * 2000],
)
def test_malformed_or_repeated_sort_is_400(engine: Any, sort: str) -> None:
    pager = CursorPaginator(sortable={"name", "created_at"})
    with Session(engine) as s, pytest.raises(InvalidSort) as info:
        pager.paginate(s, select(User), sort=sort)
    problem = json.dumps(info.value.to_problem())
    assert "drop" not in problem
    assert "xxxx" not in problem


def test_mapped_public_names_sort_on_joined_columns(engine: Any) -> None:
    with Session(engine) as s:
        s.add_all(Post(id=100 + i, user_id=11 - i) for i in range(1, 11))
        s.commit()
        stmt = select(Post).join(User, User.id == Post.user_id)
        pager = CursorPaginator(sortable={"author": User.name, "newest": Post.id})
        got = all_ids(pager, s, stmt, sort="-author")
        assert got == [101 + i for i in range(10)]  # author user10 wrote post 101
        with pytest.raises(InvalidSort):  # the mapped-to column name itself is not public
            pager.paginate(s, stmt, sort="name")


def test_sortable_name_missing_from_the_statement_is_a_configuration_error(engine: Any) -> None:
    pager = CursorPaginator(sortable={"nickname"})
    with Session(engine) as s, pytest.raises(ConfigurationError, match="nickname"):
        pager.paginate(s, select(User), sort="nickname")


def test_cursor_of_one_client_sort_is_refused_under_another(engine: Any) -> None:
    pager = CursorPaginator(sortable={"name", "created_at"}, secret="s" * 32)
    with Session(engine) as s:
        page = pager.paginate(s, select(User), None, 3, sort="name")
        assert page.next_cursor is not None
        with pytest.raises(InvalidCursor) as info:
            pager.paginate(s, select(User), page.next_cursor, 3, sort="-name")
        assert info.value.reason == "mismatch"


def test_bad_sortable_declarations_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        CursorPaginator(sortable="name")
    for bad in ("-name", "a,b", "", " name"):
        with pytest.raises(ConfigurationError):
            CursorPaginator(sortable={bad})


def test_sortable_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENNET_PAGINATION_SORTABLE", "name,created_at")
    pager = CursorPaginator.from_env()
    assert pager.check_sort("-created_at, name") == [("created_at", True), ("name", False)]


def _app(engine: Any, pager: CursorPaginator) -> Starlette:
    async def users(request: Request) -> JSONResponse:
        cursor, size = pager.query_args(request.query_params)
        with Session(engine) as s:
            page = pager.paginate(
                s, select(User), cursor, size, sort=request.query_params.get("sort")
            )
        return JSONResponse({"items": [u.name for u in page.items]})

    app = Starlette(routes=[Route("/users", users)])
    install_error_handlers(app)
    return app


@pytest.mark.anyio
async def test_starlette_answers_hidden_sort_with_problem_json(engine: Any) -> None:
    app = _app(engine, CursorPaginator(sortable={"name", "created_at"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await client.get("/users", params={"sort": "-name", "page_size": "2"})
        assert ok.status_code == 200
        assert ok.json()["items"] == ["user10", "user09"]
        bad = await client.get("/users", params={"sort": "-password_hash"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    body = bad.json()
    assert body["code"] == "invalid_sort"
    assert body["errors"][0]["parameter"] == "sort"
    assert "password" not in bad.text


@pytest.mark.anyio
async def test_fastapi_async_session_refuses_hidden_sort(database: Database) -> None:
    from fastapi import FastAPI

    aengine = database.async_engine()
    async with aengine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(aengine) as s:
        s.add_all(User(**r) for r in ROWS)
        await s.commit()
    pager = CursorPaginator(sortable={"name"}, sort_param="order")
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/users")
    async def users(order: str | None = None) -> dict[str, Any]:
        async with AsyncSession(aengine) as s:
            page = await pager.apaginate(s, select(User), None, 4, sort=order)
        return {"items": [u.id for u in page.items]}

    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ok = await client.get("/users", params={"order": "-name"})
            bad = await client.get("/users", params={"order": "password_hash"})
    finally:
        await aengine.dispose()
    assert ok.json()["items"] == [10, 9, 8, 7]
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["parameter"] == "order"
    assert "password_hash" not in bad.text
