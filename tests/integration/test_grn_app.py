"""The example GRN service end to end: every toolkit module behind one Starlette app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from examples.grn_app.app import create_app
from examples.grn_app.seed import INTERACTIONS
from examples.grn_app.settings import Settings
from starlette.applications import Starlette
from starlette.testclient import TestClient

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"


def _app(tmp_path: Path) -> Starlette:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'grn.db'}")
    return create_app(settings, log_json=False)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Starlette]:
    grn = _app(tmp_path)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(grn.router.lifespan_context(grn))
        yield grn


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    headers = {"X-API-Key": app.state.grn.admin_key}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
        yield c


async def _network(client: httpx.AsyncClient, name: str = "lac-test") -> int:
    r = await client.post("/v1/networks", json={"name": name, "organism": "E. coli"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def test_network_genes_and_batch_upload_with_a_per_item_error(
    client: httpx.AsyncClient,
) -> None:
    nid = await _network(client)
    for symbol in ("lacI", "lacZ", "crp"):
        r = await client.post(f"/v1/networks/{nid}/genes", json={"symbol": symbol})
        assert r.status_code == 201, r.text
    items: list[dict[str, Any]] = [
        {"regulator": "lacI", "target": "lacZ", "sign": "repression", "weight": 0.9},
        {"regulator": "crp", "target": "lacZ", "sign": "activation", "evidence": "footprint"},
        {"regulator": "crp", "target": "lacI", "sign": "sometimes"},
    ]
    url = f"/v1/networks/{nid}/interactions/batch"
    atomic = await client.post(url, json=items)
    assert atomic.status_code in (409, 422)
    assert atomic.json()["outcome"] == "rejected"
    partial = await client.post(url, params={"atomic": "false"}, json=items)
    assert partial.status_code == 207
    results = partial.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 422]
    assert "sometimes" not in partial.text
    listed = await client.get(f"/v1/networks/{nid}/interactions")
    assert {(e["regulator"], e["target"]) for e in listed.json()["items"]} == {
        ("lacI", "lacZ"),
        ("crp", "lacZ"),
    }


async def test_filters_and_cursor_pagination_walk_the_seeded_network(
    client: httpx.AsyncClient,
) -> None:
    expected = sorted(i for i, e in enumerate(INTERACTIONS, 1) if e[2] == "activation")
    seen: list[int] = []
    params: dict[str, str] = {"sign": "activation", "page_size": "7"}
    while True:
        r = await client.get("/v1/networks/1/interactions", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert all(e["sign"] == "activation" for e in body["items"])
        seen += [e["id"] for e in body["items"]]
        if not body["page_info"]["hasNextPage"]:
            break
        assert 'rel="next"' in r.headers["link"]
        params["cursor"] = body["page_info"]["endCursor"]
    assert seen == expected
    r = await client.get("/v1/networks/1/interactions", params={"regulator__in": "lacI,araC"})
    assert {e["regulator"] for e in r.json()["items"]} == {"lacI", "araC"}
    r = await client.get("/v1/networks/1/genes", params={"q": "repressor"})
    assert {g["symbol"] for g in r.json()["items"]} >= {"lacI", "galR"}


async def test_bad_cursor_and_unknown_filter_are_400_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/networks/1/interactions", params={"cursor": "AVtampered"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] == "invalid_cursor"
    first = await client.get("/v1/networks/1/interactions", params={"sign": "activation"})
    cursor = first.json()["page_info"]["endCursor"]
    other = await client.get(
        "/v1/networks/1/interactions", params={"sign": "repression", "cursor": cursor}
    )
    assert other.status_code == 400  # a cursor only works with the filters it was made for
    r = await client.get("/v1/networks/1/interactions", params={"secret__eq": "x"})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_filter"


async def test_bad_bodies_are_422_with_pointers_and_no_echo(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/networks/1/interactions",
        json={"regulator": "not a gene!", "target": "lacZ", "sign": "activation", "weight": 7},
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert pointers == {"#/regulator", "#/weight"}
    assert "not a gene!" not in r.text
    r = await client.post(
        "/v1/networks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.get("/v1/networks/999")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_cached_read_is_invalidated_by_a_write(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    cache = app.state.grn.cache
    before = (await client.get("/v1/networks/1")).json()
    hits = cache.stats().hits
    again = (await client.get("/v1/networks/1")).json()
    assert again == before
    assert cache.stats().hits == hits + 1
    r = await client.post(
        "/v1/networks/1/interactions",
        json={"regulator": "malT", "target": "lacZ", "sign": "activation", "weight": 0.1},
    )
    assert r.status_code == 201, r.text
    after = (await client.get("/v1/networks/1")).json()
    assert after["interaction_count"] == before["interaction_count"] + 1


async def test_api_key_and_roles_guard_every_route(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as anon:
        r = await anon.get("/v1/networks")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith(PROBLEM)
        assert (await anon.get("/health/live")).status_code == 200
    r = await client.post("/v1/keys", json={"owner": "reader", "role": "viewer"})
    assert r.status_code == 201
    viewer = {"X-API-Key": r.json()["key"]}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=viewer) as v:
        assert (await v.get("/v1/networks/1/genes")).status_code == 200
        denied = await v.post("/v1/networks", json={"name": "nope", "organism": "E. coli"})
        assert denied.status_code == 403
        assert denied.headers["content-type"].startswith(PROBLEM)
        assert (await v.get("/v1/audit")).status_code == 403
        assert (await v.post("/v1/keys", json={"owner": "x", "role": "admin"})).status_code == 403


async def test_writes_leave_audit_events_with_the_actor(client: httpx.AsyncClient) -> None:
    await _network(client, "audited")
    r = await client.get("/v1/audit")
    assert r.status_code == 200
    events = [e for e in r.json()["items"] if e["type"] == "http.request"]
    assert any(
        e["actor"] == "demo-admin"
        and e["data"]["route"] == "/networks"
        and e["data"]["status"] == 201
        for e in events
    )


async def test_workflow_run_completes_on_the_in_process_queue(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/workflows", params={"tag": "grn"})
    assert [t["name"] for t in r.json()["items"]] == ["grn-knockout-sim"]
    bad = await client.post("/v1/workflows/grn-knockout-sim/runs", json={"params": {"steps": 0}})
    assert bad.status_code == 422
    r = await client.post(
        "/v1/workflows/grn-knockout-sim/runs",
        json={"params": {"network": "ecoli-carbon", "knockouts": ["crp"]}},
    )
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    body: dict[str, Any] = {}
    with anyio.fail_after(20):
        while "result" not in body and "error" not in body:
            body = (await client.get(f"/v1/tasks/{task_id}")).json()
            await anyio.sleep(0.02)
    result = body["result"]
    assert result["knockouts"] == ["crp"]
    # Without CRP the lac, ara and mal operons cannot be activated.
    assert not {"lacZ", "araB", "malE", "crp"} & set(result["on"])


async def test_metrics_health_and_openapi(client: httpx.AsyncClient) -> None:
    await client.get("/v1/networks/1")
    metrics = (await client.get("/metrics")).text
    assert 'route="/networks/{network_id:int}"' in metrics
    assert '/networks/1"' not in metrics
    assert "grn_network_summary_loads_total" in metrics
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "pass"
    assert (await client.get("/health/startup")).status_code == 200
    schema = json.loads((await client.get("/openapi.json")).text)
    assert schema["openapi"].startswith("3.")
    assert "/v1/networks/{network_id}/interactions/batch" in schema["paths"]


async def test_cross_cutting_headers_and_the_offline_lookup(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/v1/networks/1/interactions",
        params={"page_size": "40"},
        headers={"Accept-Encoding": "gzip", "X-Request-ID": "grn-test-0001"},
    )
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["x-request-id"] == "grn-test-0001"
    assert "ratelimit" in r.headers
    assert len(r.json()["items"]) == 30
    r = await client.get("/v1/genes/lacZ/annotation")
    assert r.json() == {"symbol": "lacZ", "source": None, "annotation": None}
    bad = await client.get("/v1/genes/no%20such%20gene/annotation")
    assert bad.status_code == 422
    assert "no such gene" not in json.dumps(bad.json()["errors"])
    assert (await client.get("/v2/networks")).status_code == 400  # unknown API version


def test_websocket_listener_receives_a_write(tmp_path: Path) -> None:
    grn = _app(tmp_path)
    with TestClient(grn) as http:
        headers = {"X-API-Key": grn.state.grn.admin_key}
        with http.websocket_connect("/v1/networks/1/live", headers=headers) as ws:
            r = http.post("/v1/networks/1/genes", json={"symbol": "rpoS"}, headers=headers)
            assert r.status_code == 201
            message = ws.receive_json()
    assert message["event"] == "gene.created"
    assert message["gene"]["symbol"] == "rpoS"


@pytest.mark.postgres
async def test_the_same_service_runs_on_postgresql(postgres_url: str) -> None:
    import uuid

    import psycopg

    admin = postgres_url.replace("postgresql+psycopg", "postgresql")
    name = f"grn_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.rsplit("/", 1)[0] + f"/{name}"
        grn = create_app(Settings(database_url=_pg(url)), log_json=False)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(grn.router.lifespan_context(grn))
            transport = httpx.ASGITransport(app=grn)
            headers = {"X-API-Key": grn.state.grn.admin_key}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=headers
            ) as client:
                nid = await _network(client, "pg-net")
                batch = await client.post(
                    f"/v1/networks/{nid}/interactions/batch",
                    params={"atomic": "false"},
                    json=[
                        {"regulator": "lacI", "target": "lacZ", "sign": "repression"},
                        {"regulator": "lacI", "target": "lacY", "sign": "maybe"},
                    ],
                )
                assert [x["status"] for x in batch.json()["results"]] == [201, 422]
                r = await client.get("/v1/networks/1/genes", params={"q": "repressor"})
                assert {g["symbol"] for g in r.json()["items"]} >= {"lacI", "galR"}
                r = await client.get(
                    "/v1/networks/1/interactions", params={"weight__gte": "0.9", "page_size": "3"}
                )
                assert all(e["weight"] >= 0.9 for e in r.json()["items"])
                assert r.json()["page_info"]["hasNextPage"]
                assert (await client.get("/health/ready")).status_code == 200
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg(url: str) -> str:
    from examples.grn_app.settings import _async_url

    return _async_url(url)
