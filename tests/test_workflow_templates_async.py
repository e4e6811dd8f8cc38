"""AsyncTemplateRegistry on aiosqlite and asyncpg, and the registry behind Starlette and
FastAPI routes (errors as problem+json, never echoing submitted values)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gennet_toolkit.error_handler import install_error_handlers
from gennet_toolkit.exceptions import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from gennet_toolkit.workflow_templates import (
    AsyncSqlTemplateStore,
    AsyncTemplateRegistry,
    Step,
    Template,
    WorkflowRun,
)
from tests.services import Database, closed_port_url

pytestmark = pytest.mark.anyio

SECRET = "hunter2-do-not-echo"
PARAMS = {
    "type": "object",
    "properties": {
        "network": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        "knockouts": {"type": "array", "items": {"type": "string"}, "default": []},
        "noise": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
    },
    "required": ["network"],
}
STEPS = [
    Step("load", uses="grn.load", inputs={"network": "${params.network}"}),
    Step(
        "simulate",
        uses="grn.simulate",
        inputs={"knockouts": "${params.knockouts}", "noise": "${params.noise}"},
        depends_on=["load"],
    ),
]


def template(version: str = "1.0.0", **kw: Any) -> Template:
    return Template("grn-knockout-sim", version, STEPS, parameters=PARAMS, tags=("grn",), **kw)


@pytest.fixture
async def registry(database: Database) -> AsyncIterator[AsyncTemplateRegistry]:
    engine = database.async_engine()
    store = AsyncSqlTemplateStore(engine)
    await store.create_tables()
    yield AsyncTemplateRegistry(store)
    await engine.dispose()


async def test_async_registry_publishes_discovers_instantiates_and_counts(
    registry: AsyncTemplateRegistry,
) -> None:
    await registry.create(template("1.9.0"))
    await registry.publish(template("1.10.0"))
    await registry.create(template("1.10.0"))  # idempotent
    assert (await registry.get("grn-knockout-sim")).version == "1.10.0"
    assert await registry.versions("grn-knockout-sim") == ["1.9.0", "1.10.0"]
    page = await registry.discover(tag="grn", text="knockout")
    assert [(i.name, i.version) for i in page.items] == [("grn-knockout-sim", "1.10.0")]

    submitted: list[WorkflowRun] = []

    async def enqueue(run: WorkflowRun) -> None:
        await asyncio.sleep(0)
        submitted.append(run)

    run = await registry.instantiate("grn-knockout-sim", {"network": "yeast"}, submit=enqueue)
    assert submitted == [run]
    assert run.params == {"network": "yeast", "knockouts": [], "noise": 0.1}
    assert run.steps[1].inputs == {"knockouts": [], "noise": 0.1}
    sync_hook: list[str] = []
    await registry.instantiate(
        "grn-knockout-sim", {"network": "yeast"}, "1.9.0", submit=lambda r: sync_hook.append(r.id)
    )
    assert len(sync_hook) == 1
    usage = await registry.usage("grn-knockout-sim")
    assert usage.by_version == {"1.9.0": 1, "1.10.0": 1}
    assert registry.compilations == 2


async def test_async_errors_match_the_sync_registry(registry: AsyncTemplateRegistry) -> None:
    await registry.create(template())
    with pytest.raises(Conflict):
        await registry.create(template(description="changed"))
    with pytest.raises(NotFound):
        await registry.get("grn-knockout-sim", "2.0.0")
    with pytest.raises(NotFound):
        await registry.usage("missing")
    with pytest.raises(ValidationFailed) as info:
        await registry.instantiate("grn-knockout-sim", {"network": SECRET + "!", "noise": 7})
    assert SECRET not in json.dumps(info.value.to_problem())


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
async def test_text_no_database_can_take_is_a_4xx_never_a_driver_error(
    registry: AsyncTemplateRegistry, bad: str
) -> None:
    # NUL and lone surrogates would fail inside asyncpg/aiosqlite (a 500): 404s and 400s.
    await registry.create(template())
    for call in (
        lambda: registry.get(bad),
        lambda: registry.instantiate(bad, {"network": "yeast"}),
        lambda: registry.usage(bad),
        lambda: registry.versions(bad),
    ):
        with pytest.raises(NotFound):
            await call()
    for kwargs in ({"tag": bad}, {"text": bad}):
        with pytest.raises(BadRequest):
            await registry.discover(**kwargs)


async def test_concurrent_async_publishes_have_exactly_one_winner(
    registry: AsyncTemplateRegistry,
) -> None:
    results = await asyncio.gather(
        *(registry.create(template(description=f"writer {i}")) for i in range(6)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, Template)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if r not in winners)
    assert (await registry.get("grn-knockout-sim")).digest == winners[0].digest


async def test_unreachable_database_is_503_on_the_async_registry() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    # asyncpg raises a bare ConnectionRefusedError here, not a SQLAlchemy error.
    engine = create_async_engine(closed_port_url("postgresql+asyncpg"))
    registry = AsyncTemplateRegistry(AsyncSqlTemplateStore(engine))
    try:
        with pytest.raises(ServiceUnavailable) as info:
            await registry.get("grn-knockout-sim")
        assert info.value.status_code == 503
        with pytest.raises(ServiceUnavailable):
            await registry.create(template())
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- HTTP


def _routes(registry: AsyncTemplateRegistry) -> list[Route]:
    async def publish(request: Request) -> JSONResponse:
        t = await registry.create(Template.from_dict(await request.json()))
        return JSONResponse({"name": t.name, "version": t.version, "digest": t.digest}, 201)

    async def instantiate(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        run = await registry.instantiate(
            name, await request.json(), request.query_params.get("version")
        )
        return JSONResponse(run.to_dict(), 201)

    async def discover(request: Request) -> JSONResponse:
        q = request.query_params
        page = await registry.discover(
            tag=q.get("tag"),
            text=q.get("q"),
            cursor=q.get("cursor"),
            limit=int(q.get("limit", "20")),
        )
        return JSONResponse({"items": [i.name for i in page.items], "next": page.next_cursor})

    return [
        Route("/templates", publish, methods=["POST"]),
        Route("/templates", discover, methods=["GET"]),
        Route("/templates/{name}/runs", instantiate, methods=["POST"]),
    ]


def _starlette(registry: AsyncTemplateRegistry) -> Any:
    app = Starlette(routes=_routes(registry))
    install_error_handlers(app)
    return app


def _fastapi(registry: AsyncTemplateRegistry) -> Any:
    app = FastAPI()
    for route in _routes(registry):
        app.router.routes.append(route)
    install_error_handlers(app)
    return app


@pytest.mark.parametrize("make_app", [_starlette, _fastapi])
async def test_http_errors_are_problem_json_without_submitted_values(
    registry: AsyncTemplateRegistry, make_app: Any
) -> None:
    app = make_app(registry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        doc = template().to_dict()
        assert (await client.post("/templates", json=doc)).status_code == 201
        assert (await client.post("/templates", json=doc)).status_code == 201

        changed = {**doc, "description": SECRET}
        r = await client.post("/templates", json=changed)
        assert r.status_code == 409
        assert r.headers["content-type"].startswith("application/problem+json")

        cyclic = {
            **doc,
            "version": "1.1.0",
            "steps": [
                {"name": "a", "uses": SECRET, "depends_on": ["b"]},
                {"name": "b", "uses": "x", "depends_on": ["a"]},
            ],
        }
        r = await client.post("/templates", json=cyclic)
        assert r.status_code == 422
        assert r.json()["code"] == "invalid_template"
        assert SECRET not in r.text

        remote = {**doc, "version": "1.2.0", "parameters": {"$ref": f"https://{SECRET}.example/s"}}
        r = await client.post("/templates", json=remote)
        assert r.status_code == 422
        assert r.json()["errors"][0]["pointer"] == "#/parameters/$ref"
        assert SECRET not in r.text

        evil = {
            **doc,
            "version": "1.3.0",
            "parameters": {"properties": {"x": {"type": "string", "pattern": "(a+)+$"}}},
        }
        r = await client.post("/templates", json=evil)
        assert r.status_code == 422
        assert r.json()["errors"][0]["pointer"] == "#/parameters/properties/x/pattern"

        r = await client.post(
            "/templates/grn-knockout-sim/runs", json={"network": SECRET + " !", "noise": SECRET}
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert {e["pointer"] for e in r.json()["errors"]} == {"#/network", "#/noise"}
        assert SECRET not in r.text

        r = await client.post(
            "/templates/grn-knockout-sim/runs?version=9.0.0", json={"network": "yeast"}
        )
        assert r.status_code == 404
        r = await client.post("/templates/grn-knockout-sim/runs", json={"network": "yeast"})
        assert r.status_code == 201
        assert r.json()["version"] == "1.0.0"

        r = await client.get("/templates", params={"cursor": SECRET})
        assert r.status_code == 400
        assert SECRET not in r.text


async def test_async_store_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("GENNET_WORKFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/env.db")
    store = AsyncSqlTemplateStore.from_env()
    await store.create_tables()
    try:
        registry = AsyncTemplateRegistry(store)
        await registry.create(template())
        assert (await registry.get("grn-knockout-sim")).version == "1.0.0"
    finally:
        await store.engine.dispose()
