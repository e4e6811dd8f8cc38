"""batch_operations behind HTTP endpoints (Starlette and FastAPI): bodies, caps, statuses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gennet_toolkit.batch_operations import BatchProcessor
from gennet_toolkit.error_handler import install_error_handlers
from tests.services import Database
from tests.test_batch_operations import SECRET, Base, Gene, make_engine

pytestmark = pytest.mark.anyio


@pytest.fixture
async def processor(database: Database) -> AsyncIterator[BatchProcessor]:
    engine = make_engine(database, is_async=True)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield BatchProcessor(async_sessionmaker(engine), Gene, max_items=5, max_bytes=2_000)
    await engine.dispose()


def starlette_app(proc: BatchProcessor) -> Starlette:
    async def batch_create(request: Request) -> JSONResponse:
        items = await proc.read_items(request)
        result = await proc.acreate_many(
            items,
            atomic=request.query_params.get("atomic", "true") != "false",
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return JSONResponse(result.to_dict(), status_code=result.status_code)

    async def batch_delete(request: Request) -> JSONResponse:
        ids = await proc.read_items(request, member="ids")
        result = await proc.adelete_many(ids, atomic=False)
        return JSONResponse(result.to_dict(), status_code=result.status_code)

    app = Starlette(
        routes=[
            Route("/v1/genes:batchCreate", batch_create, methods=["POST"]),
            Route("/v1/genes:batchDelete", batch_delete, methods=["POST"]),
        ]
    )
    install_error_handlers(app)
    return app


def fastapi_app(proc: BatchProcessor) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/genes:batchCreate")
    async def batch_create(request: Request) -> JSONResponse:
        items = await proc.read_items(request)
        result = await proc.acreate_many(items, atomic=False)
        return JSONResponse(result.to_dict(), status_code=result.status_code)

    install_error_handlers(app)
    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_valid_batch_is_a_200_with_per_item_results(processor: BatchProcessor) -> None:
    async with client(starlette_app(processor)) as c:
        r = await c.post(
            "/v1/genes:batchCreate", json={"items": [{"symbol": "a"}, {"symbol": "b"}]}
        )
    assert r.status_code == 200
    body = r.json()
    assert body["outcome"] == "ok"
    assert [e["result"] for e in body["results"]] == ["created", "created"]


@pytest.mark.parametrize("make_app", [starlette_app, fastapi_app])
async def test_a_partly_failing_batch_is_a_207_naming_each_index(
    processor: BatchProcessor, make_app: Any
) -> None:
    items = [{"symbol": "ok"}, {"symbol": SECRET}, {"symbol": "ok"}, {"nope": SECRET}]
    async with client(make_app(processor)) as c:
        r = await c.post("/v1/genes:batchCreate?atomic=false", json=items)
    assert r.status_code == 207
    results = r.json()["results"]
    assert [(e["index"], e["status"]) for e in results] == [(0, 201), (1, 422), (2, 409), (3, 422)]
    assert results[1]["error"]["code"] == "too_long"
    assert results[2]["error"]["code"] == "duplicate_in_batch"
    assert SECRET not in r.text


async def test_an_atomic_batch_with_a_bad_item_writes_nothing(processor: BatchProcessor) -> None:
    async with client(starlette_app(processor)) as c:
        r = await c.post("/v1/genes:batchCreate", json=[{"symbol": "a"}, {"symbol": None}])
        assert r.status_code == 422
        assert r.json()["outcome"] == "rejected"
        ok = await c.post("/v1/genes:batchCreate", json=[{"symbol": "a"}])
    assert ok.status_code == 200


async def test_too_many_items_is_a_413_problem(processor: BatchProcessor) -> None:
    async with client(starlette_app(processor)) as c:
        r = await c.post("/v1/genes:batchCreate", json=[{"symbol": f"g{i}"} for i in range(6)])
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "too_many_items"
    assert r.json()["max_items"] == 5


async def test_too_many_bytes_is_a_413_even_without_content_length(
    processor: BatchProcessor,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'[{"symbol": "'
        for _ in range(30):
            yield b"x" * 100
        yield b'"}]'

    async with client(starlette_app(processor)) as c:
        declared = await c.post("/v1/genes:batchCreate", content=b"[" + b" " * 3000 + b"]")
        streamed = await c.post("/v1/genes:batchCreate", content=chunks())
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"items": "abc"}', "invalid_batch"),
        (b"42", "invalid_batch"),
    ],
)
async def test_malformed_bodies_are_a_400(
    processor: BatchProcessor, body: bytes, code: str
) -> None:
    async with client(starlette_app(processor)) as c:
        r = await c.post("/v1/genes:batchCreate", content=body)
    assert r.status_code == 400
    assert r.json()["code"] == code
    assert "abc" not in r.text


async def test_idempotency_key_replays_and_refuses_another_payload(
    processor: BatchProcessor,
) -> None:
    headers = {"Idempotency-Key": "order-7"}
    async with client(starlette_app(processor)) as c:
        first = await c.post("/v1/genes:batchCreate", json=[{"symbol": "a"}], headers=headers)
        again = await c.post("/v1/genes:batchCreate", json=[{"symbol": "a"}], headers=headers)
        other = await c.post("/v1/genes:batchCreate", json=[{"symbol": "b"}], headers=headers)
        bad = await c.post(
            "/v1/genes:batchCreate", json=[{"symbol": "c"}], headers={"Idempotency-Key": "a b"}
        )
    assert first.status_code == again.status_code == 200
    assert again.json()["replayed"] is True
    assert first.json()["results"] == again.json()["results"]
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert bad.status_code == 400


async def test_batch_delete_by_ids(processor: BatchProcessor) -> None:
    async with client(starlette_app(processor)) as c:
        created = await c.post("/v1/genes:batchCreate", json=[{"id": 1, "symbol": "a"}])
        assert created.status_code == 200
        r = await c.post("/v1/genes:batchDelete", content=json.dumps({"ids": [1, 2]}))
    assert r.status_code == 207
    assert [e["status"] for e in r.json()["results"]] == [200, 404]


def run_docs_example(page: str, driver: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the first Python block of ``docs/<page>``, then ``driver``, in a fresh process."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("\n```", 1)[0]
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code + "\n" + textwrap.dedent(driver)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_example_answers_as_the_page_says(tmp_path: Path) -> None:
    driver = """
        import json
        from starlette.testclient import TestClient
        url = "/v1/genes:batchCreate"
        body = [{"symbol": "lacZ"}, {"symbol": "lacZ"}, {"symbol": 7}]
        with TestClient(app) as c:
            partial = c.post(url + "?atomic=false", json=body)
            atomic = c.post(url, json=[{"symbol": "lacY"}, {"symbol": "lacY"}, {"symbol": 7}])
            big = c.post(url, json=[{"symbol": f"s{i}"} for i in range(1001)])
            key = {"Idempotency-Key": "k1"}
            once = c.post(url, json=[{"symbol": "a"}], headers=key)
            again = c.post(url, json=[{"symbol": "a"}], headers=key)
            reused = c.post(url, json=[{"symbol": "b"}], headers=key)
        print(partial.status_code, json.dumps(partial.json(), sort_keys=True))
        print(atomic.status_code, atomic.json()["outcome"])
        print(big.status_code, big.headers["content-type"], big.json()["code"])
        print(once.status_code, again.status_code, again.json()["replayed"])
        print(reused.status_code, reused.json()["code"])
    """
    out = run_docs_example("batch_operations.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    page = (Path(__file__).resolve().parents[1] / "docs" / "batch_operations.md").read_text()
    documented = json.loads(page.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert lines[0] == "207 " + json.dumps(documented, sort_keys=True)
    assert lines[1:] == [
        "409 rejected",
        "413 application/problem+json too_many_items",
        "200 200 True",
        "409 idempotency_key_reused",
    ]
