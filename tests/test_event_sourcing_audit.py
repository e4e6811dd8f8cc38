"""Audit trail: the middleware under Starlette, FastAPI and bare ASGI, and the service helpers."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.event_sourcing import (
    AsyncEventStore,
    AuditBatch,
    AuditTrailMiddleware,
    EventStore,
    arecord,
    audit_event,
    record,
)
from gennet_toolkit.types import Message, Receive, Scope, Send
from tests.services import Database, free_port

KEY = b"test-key-0123456789abcdef"


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        user = conn.headers.get("x-user")
        return (AuthCredentials(["authenticated"]), SimpleUser(user)) if user else None


class SetCorrelationId:
    """Stands in for the logging middleware: sets the shared correlation id."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = correlation_id_var.set("cid-123")
        try:
            await self.app(scope, receive, send)
        finally:
            correlation_id_var.reset(token)


@pytest.fixture
async def astore(database: Database) -> AsyncIterator[AsyncEventStore]:
    engine = database.async_engine()
    s = AsyncEventStore(engine, key=KEY)
    await s.create_tables()
    yield s
    await engine.dispose()


@pytest.fixture
def store(database: Database) -> Iterator[EventStore]:
    engine = database.engine()
    s = EventStore(engine, key=KEY)
    s.create_tables()
    yield s
    engine.dispose()


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def starlette_app(store: Any, **options: Any) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        return JSONResponse({"symbol": request.path_params["symbol"]}, status_code=201)

    async def show(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def forbidden(request: Request) -> PlainTextResponse:
        return PlainTextResponse("no", status_code=403)

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("handler failed")

    return Starlette(
        routes=[
            Route("/genes/{symbol}", create, methods=["POST"]),
            Route("/genes/{symbol}", show, methods=["GET"]),
            Route("/admin", forbidden, methods=["DELETE"]),
            Route("/boom", boom, methods=["PUT"]),
        ],
        middleware=[
            Middleware(SetCorrelationId),
            Middleware(AuthenticationMiddleware, backend=HeaderAuth()),
            Middleware(AuditTrailMiddleware, store=store, **options),
        ],
    )


@pytest.mark.anyio
async def test_starlette_mutations_are_recorded_with_actor_route_and_status(
    astore: AsyncEventStore,
) -> None:
    async with client(starlette_app(astore)) as c:
        assert (await c.post("/genes/lacZ", headers={"x-user": "alice"})).status_code == 201
        assert (await c.get("/genes/lacZ", headers={"x-user": "alice"})).status_code == 200
        assert (await c.delete("/admin")).status_code == 403
        assert (await c.put("/boom", headers={"x-user": "bob"})).status_code == 500
        assert (await c.patch("/nowhere")).status_code == 404
    events = await astore.read_stream("audit")
    assert [(e.type, e.actor) for e in events] == [
        ("http.request", "alice"),
        ("http.request", None),
        ("http.request", "bob"),
        ("http.request", None),
    ]
    assert events[0].data == {
        "method": "POST",
        "route": "/genes/{symbol}",
        "path_params": {"symbol": "lacZ"},
        "status": 201,
        "outcome": "success",
    }
    assert [(e.data["status"], e.data["outcome"]) for e in events[1:]] == [
        (403, "denied"),
        (500, "failed"),
        (404, "failed"),
    ]
    assert events[3].data["route"] is None  # unmatched: never the raw path
    assert {e.correlation_id for e in events} == {"cid-123"}
    assert (await astore.verify()).ok


@pytest.mark.anyio
async def test_fastapi_routes_with_a_sync_store_and_custom_actor(store: EventStore) -> None:
    app = FastAPI()

    @app.put("/networks/{network_id}/genes/{symbol}")
    async def put_gene(network_id: int, symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    @app.delete("/networks/{network_id}")
    async def delete_network(network_id: int) -> None:
        raise HTTPException(status_code=404)

    app.add_middleware(
        AuditTrailMiddleware,
        store=store,
        actor=lambda scope: dict(scope["headers"]).get(b"x-api-key-id", b"").decode() or None,
        stream="audit-http",
    )
    async with client(app) as c:
        r = await c.put("/networks/7/genes/araC", headers={"x-api-key-id": "key-9"})
        assert r.status_code == 200
        assert (await c.delete("/networks/8")).status_code == 404
        assert (await c.post("/networks/x/genes/y")).status_code == 405
    events = store.read_stream("audit-http")
    assert [(e.actor, e.data["route"], e.data["status"]) for e in events] == [
        ("key-9", "/networks/{network_id}/genes/{symbol}", 200),
        (None, "/networks/{network_id}", 404),
        (None, "/networks/{network_id}/genes/{symbol}", 405),
    ]
    assert events[0].data["path_params"] == {"network_id": "7", "symbol": "araC"}


@pytest.mark.anyio
async def test_bare_asgi_streaming_passes_through_and_is_recorded_after_the_end(
    astore: AsyncEventStore,
) -> None:
    recorded_at_send: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"hdr-1")]}
        )
        for chunk in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        recorded_at_send.append(len(await astore.read_all()))
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    mw = AuditTrailMiddleware(app, store=astore)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "root_path": ""}
    await mw(scope, receive, send)
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b", b"c", b""]  # not buffered
    assert recorded_at_send == [0] * 5  # the audit event came after the last message
    events = await astore.read_all()
    assert len(events) == 1
    assert events[0].correlation_id == "hdr-1"  # from the response when no context id

    # Non-HTTP scopes and excluded paths pass straight through.
    lifespan_seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        lifespan_seen.append(scope["type"])

    await AuditTrailMiddleware(inner, store=astore)({"type": "lifespan"}, receive, send)
    excluded = AuditTrailMiddleware(app, store=astore, exclude_paths=["/x"])
    await excluded(scope, receive, send)
    assert lifespan_seen == ["lifespan"]
    assert len(await astore.read_all()) == 1


def _down_store() -> EventStore:
    return EventStore(
        sa.create_engine(f"postgresql+psycopg://127.0.0.1:{free_port()}/test"), key=KEY
    )


@pytest.mark.anyio
async def test_store_down_never_fails_the_request_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = _down_store()
    caplog.set_level(logging.ERROR, logger="gennet_toolkit.event_sourcing.audit")
    async with client(starlette_app(down)) as c:
        for _ in range(3):
            assert (await c.post("/genes/lacZ")).status_code == 201
    errors = [r for r in caplog.records if r.name == "gennet_toolkit.event_sourcing.audit"]
    assert len(errors) == 1
    assert "unaudited" in errors[0].getMessage()
    down.engine.dispose()


@pytest.mark.anyio
async def test_fail_closed_answers_503_without_running_the_handler() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"postgresql+asyncpg://127.0.0.1:{free_port()}/test")
    down = AsyncEventStore(engine, key=KEY)
    calls: list[str] = []

    async def create(request: Request) -> PlainTextResponse:
        calls.append("ran")
        return PlainTextResponse("created", status_code=201)

    app = Starlette(
        routes=[Route("/genes", create, methods=["POST", "GET"])],
        middleware=[Middleware(AuditTrailMiddleware, store=down, fail_closed=True)],
    )
    async with client(app) as c:
        r = await c.post("/genes", content=b"secret-body-value")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "5"
        body = r.json()
        assert body["code"] == "service_unavailable"
        assert "secret-body-value" not in r.text
        assert (await c.get("/genes")).status_code == 201  # reads are not audited
    assert calls == ["ran"]
    await engine.dispose()


@pytest.mark.anyio
async def test_recovery_after_an_incident_is_logged_and_recording_resumes(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(sqlite_url)
    s = EventStore(engine, key=KEY)  # tables missing: every append fails
    caplog.set_level(logging.WARNING, logger="gennet_toolkit.event_sourcing.audit")
    async with client(starlette_app(s)) as c:
        await c.post("/genes/a")
        await c.post("/genes/b")
        s.create_tables()
        await c.post("/genes/c")
        await c.post("/genes/d")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unavailable" in messages[0]
    assert "recovered" in messages[1]
    assert [e.data["path_params"]["symbol"] for e in s.read_stream("audit")] == ["c", "d"]
    engine.dispose()


def test_middleware_options_from_env(monkeypatch: pytest.MonkeyPatch, store: EventStore) -> None:
    monkeypatch.setenv("GENNET_AUDIT_FAIL_CLOSED", "true")
    monkeypatch.setenv("GENNET_AUDIT_STREAM", "http")
    monkeypatch.setenv("GENNET_AUDIT_EXCLUDE_PATHS", "/health, /metrics")
    mw = AuditTrailMiddleware.from_env(lambda *a: None, store=store)  # type: ignore[arg-type,return-value]
    assert mw.fail_closed is True
    assert mw.stream == "http"
    assert mw.exclude_paths == {"/health", "/metrics"}
    with pytest.raises(TypeError):
        AuditTrailMiddleware(lambda *a: None, store=object())  # type: ignore[arg-type,return-value]


# ---------------------------------------------------------------------- service layer


def test_record_and_batches_commit_with_the_callers_transaction(store: EventStore) -> None:
    genes = sa.Table("genes", sa.MetaData(), sa.Column("symbol", sa.String(20), primary_key=True))
    genes.create(store.engine)
    with store.engine.connect() as conn:
        conn.execute(genes.insert(), {"symbol": "lacZ"})
        record(store, actor="alice", action="gene.create", target="lacZ", connection=conn)
        conn.commit()
    # Per item: one audit event per written row, in one append.
    with store.engine.connect() as conn:
        with AuditBatch(store, actor="bob", action="gene.create", connection=conn) as batch:
            for symbol in ("lacY", "lacA"):
                conn.execute(genes.insert(), {"symbol": symbol})
                batch.add(symbol, {"symbol": symbol})
        conn.commit()
    assert [e.version for e in batch.recorded] == [2, 3]
    # Per batch: one summary event.
    with store.engine.connect() as conn:
        with AuditBatch(
            store,
            actor="bob",
            action="gene.import",
            per_item=False,
            connection=conn,
            data={"file": "x.tsv"},
        ) as batch:
            for symbol in ("araC", "araB"):
                conn.execute(genes.insert(), {"symbol": symbol})
                batch.add(symbol)
        conn.commit()

    # A failing batch records nothing and its rows roll back with it.
    def failing_batch(conn: sa.Connection) -> None:
        with AuditBatch(store, actor="eve", action="gene.create", connection=conn) as batch:
            for symbol in ("galK", "lacZ"):  # lacZ exists: the second insert fails
                conn.execute(genes.insert(), {"symbol": symbol})
                batch.add(symbol)

    with store.engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            failing_batch(conn)
        conn.rollback()
    events = store.read_stream("audit")
    assert [(e.type, e.actor, e.data["target"]) for e in events] == [
        ("gene.create", "alice", "lacZ"),
        ("gene.create", "bob", "lacY"),
        ("gene.create", "bob", "lacA"),
        ("gene.import", "bob", None),
    ]
    assert events[3].data["data"] == {
        "targets": ["araC", "araB"],
        "count": 2,
        "batch": {"file": "x.tsv"},
    }
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(genes)).scalar() == 5
    assert store.verify().ok


@pytest.mark.anyio
async def test_async_helpers(astore: AsyncEventStore) -> None:
    await arecord(
        astore,
        actor="alice",
        action="network.delete",
        target="n1",
        outcome="denied",
        reason="not owner",
    )
    async with AuditBatch(astore, actor="bob", action="gene.create") as batch:
        batch.add("lacZ")
    with pytest.raises(TypeError), AuditBatch(astore, actor="bob", action="x"):
        pass
    events = await astore.read_stream("audit")
    assert events[0].data == {"target": "n1", "outcome": "denied", "reason": "not owner"}
    assert events[1].data == {"target": "lacZ", "outcome": "success"}
    assert audit_event(action="a", data={"k": 1}).data == {
        "target": None,
        "outcome": "success",
        "data": {"k": 1},
    }


def test_batch_processor_writes_are_audited_per_item_in_their_transaction(
    store: EventStore,
) -> None:
    # The service-layer hook for batch writes: batch_operations' before_commit appends one
    # audit event per written item inside the batch's own transaction.
    from sqlalchemy.orm import sessionmaker

    from gennet_toolkit.batch_operations import BatchProcessor, BatchResult

    genes = sa.Table(
        "audited_genes",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("symbol", sa.String(20), unique=True, nullable=False),
    )
    genes.create(store.engine)
    submitted: list[Any] = []

    def audit(session: Any, result: BatchResult) -> None:
        written = sorted(result.created + result.updated + result.deleted)
        with AuditBatch(
            store, actor="bob", action=f"gene.{result.operation}", connection=session.connection()
        ) as batch:
            for i in written:
                item = submitted[i]
                batch.add(str(result.keys[i]), item if isinstance(item, dict) else None)

    processor = BatchProcessor(sessionmaker(store.engine), genes, before_commit=audit)

    def run(method: str, items: list[Any], **options: Any) -> BatchResult:
        submitted[:] = items
        result: BatchResult = getattr(processor, method)(items, **options)
        return result

    first = run("create_many", [{"id": 1, "symbol": "lacZ"}, {"id": 2, "symbol": "lacY"}])
    assert first.ok
    partial = run(
        "create_many",
        [{"id": 3, "symbol": "lacA"}, {"id": 4, "symbol": "lacZ"}, {"id": 5, "symbol": "crp"}],
        atomic=False,
    )
    assert [e.index for e in partial.failed] == [1]
    rejected = run("create_many", [{"id": 6, "symbol": "araC"}, {"id": 1, "symbol": "x"}])
    assert rejected.rejected
    assert run("delete_many", [2, 99], atomic=False).deleted == [0]

    events = store.read_stream("audit")
    assert [(e.type, e.actor, e.data["target"]) for e in events] == [
        ("gene.create", "bob", "1"),
        ("gene.create", "bob", "2"),
        ("gene.create", "bob", "3"),
        ("gene.create", "bob", "5"),
        ("gene.delete", "bob", "2"),
    ]
    assert events[0].data["data"] == {"id": 1, "symbol": "lacZ"}
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(genes.c.id).order_by(genes.c.id)).scalars().all()
    assert rows == [1, 3, 5]  # the rejected batch wrote nothing and recorded nothing

    # An audit append that fails takes the batch's writes down with it.
    def failing_audit(session: Any, result: BatchResult) -> None:
        record(store, actor="", action="gene.create", connection=session.connection())

    failing = BatchProcessor(sessionmaker(store.engine), genes, before_commit=failing_audit)
    with pytest.raises(ValueError):
        failing.create_many([{"id": 7, "symbol": "galK"}])
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(genes)).scalar() == 3
    assert len(store.read_stream("audit")) == 5
    assert store.verify().ok


def run_docs_example(
    page: str, driver: str, cwd: Path, *, block: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run Python block ``block`` of ``docs/<page>``, then ``driver``, in a fresh process."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    code = text.split("```python\n")[block + 1].split("\n```", 1)[0]
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code + "\n" + textwrap.dedent(driver)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_examples_run_as_printed(tmp_path: Path) -> None:
    store_example = run_docs_example("event_sourcing.md", "", tmp_path)
    assert store_example.returncode == 0, store_example.stderr
    assert store_example.stdout.splitlines() == [
        "stale: 0 -> 3",
        "1 network-1 1 GeneAdded alice",
        "2 network-1 2 GeneAdded alice",
        "3 network-1 3 EdgeAdded alice",
        "True 3 None None",
    ]
    driver = """
        import asyncio
        from starlette.testclient import TestClient
        with TestClient(app) as c:
            r = c.post("/networks/1/genes", json=[{"symbol": "lacZ"}, {"symbol": "lacY"}])
        print(r.status_code)
        async def show():
            for e in await audit_store.read_stream("audit"):
                print(e.type, e.data.get("target"), e.data.get("route"), e.data["outcome"])
        asyncio.run(show())
    """
    audit_example = run_docs_example("event_sourcing.md", driver, tmp_path, block=1)
    assert audit_example.returncode == 0, audit_example.stderr
    assert audit_example.stdout.splitlines() == [
        "201",
        "gene.create lacZ None success",
        "gene.create lacY None success",
        "http.request None /networks/{network_id}/genes success",
    ]
