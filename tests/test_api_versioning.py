"""Tests for gennet_toolkit.api_versioning under Starlette, FastAPI and bare ASGI."""

from __future__ import annotations

import datetime as dt
import email.utils
import inspect
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gennet_toolkit import api_versioning
from gennet_toolkit.api_versioning import (
    ChangeContext,
    Deprecation,
    VersionChange,
    VersioningMiddleware,
    format_version,
    get_api_version,
)
from gennet_toolkit.exceptions import ConfigurationError, ValidationFailed

pytestmark = pytest.mark.anyio
PROBLEM = "application/problem+json"


class Boom(Exception):
    pass


def _plain(version: Any) -> Any:
    return format_version(version) if isinstance(version, dt.date) else version


async def show(request: Request) -> Response:
    return JSONResponse(
        {
            "version": _plain(get_api_version(request)),
            "state": _plain(request.state.api_version),
            "route": request.scope["path"],
            "root_path": request.scope["root_path"],
            "query": request.url.query,
            "url_for": str(request.url_for("gene", gene_id="TP53")),
        },
        headers={"Vary": "Accept-Encoding"},
    )


async def gene(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["gene_id"], "v": get_api_version(request)})


async def boom(request: Request) -> Response:
    raise Boom


async def boom_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse({"handled": True, "v": get_api_version(request)}, status_code=418)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def starlette_app(**options: Any) -> Any:
    app = Starlette(
        routes=[
            Route("/show", show),
            Route("/genes/{gene_id}", gene, name="gene"),
            Route("/videos", health),
            Route("/boom", boom),
            Route("/health", health),
        ],
        exception_handlers={Boom: boom_handler},
    )
    options.setdefault("versions", [1, 2, 3])
    options.setdefault("default", 3)
    app.add_middleware(VersioningMiddleware, **options)
    return app


@asynccontextmanager
async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body: dict[str, Any] = resp.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


# --------------------------------------------------------------------------- strategies


async def test_url_prefix_routes_once_written_routes_and_url_for() -> None:
    async with client_for(starlette_app()) as c:
        resp = await c.get("/v2/show")
    assert resp.status_code == 200
    body = resp.json()
    assert body["version"] == body["state"] == 2
    assert body["root_path"] == "/v2"
    assert body["url_for"] == "http://test/v2/genes/TP53"
    assert resp.headers["api-version"] == "2"


async def test_url_prefix_under_an_existing_root_path() -> None:
    app = starlette_app()
    async with client_for(app) as c:
        scope_checks = await c.get("/v1/genes/lacZ")
    assert scope_checks.json() == {"id": "lacZ", "v": 1}


async def test_header_strategy_and_vary_merged() -> None:
    async with client_for(starlette_app()) as c:
        resp = await c.get("/show", headers={"API-Version": "1"})
    assert resp.json()["version"] == 1
    assert resp.json()["url_for"] == "http://test/genes/TP53"
    vary = ", ".join(resp.headers.get_list("vary"))
    assert "Accept-Encoding" in vary
    assert "API-Version" in vary


async def test_media_type_strategy() -> None:
    app = starlette_app(strategies=("url", "header", "media_type"))
    async with client_for(app) as c:
        resp = await c.get(
            "/show", headers={"Accept": "text/html;q=0.5, application/vnd.gennet+json; version=2"}
        )
        plain = await c.get("/show", headers={"Accept": "application/json"})
    assert resp.json()["version"] == 2
    assert plain.json()["version"] == 3
    # Token by token: "Accept-Encoding" from elsewhere in the stack must not count.
    vary = {t.strip().lower() for v in resp.headers.get_list("vary") for t in v.split(",")}
    assert "accept" in vary


async def test_query_strategy_is_opt_in_and_removed_before_the_app() -> None:
    async with client_for(starlette_app()) as c:
        off = await c.get("/show?version=1&x=1")
    assert off.json()["version"] == 3
    assert off.json()["query"] == "version=1&x=1"
    async with client_for(starlette_app(strategies=("query",))) as c:
        on = await c.get("/show?a=1&version=1&b=2")
    assert on.json()["version"] == 1
    assert on.json()["query"] == "a=1&b=2"


async def test_default_version_applies_when_none_is_named() -> None:
    async with client_for(starlette_app(default=2)) as c:
        resp = await c.get("/show")
    assert resp.json()["version"] == 2


async def test_version_required_when_no_default() -> None:
    async with client_for(starlette_app(default=None)) as c:
        resp = await c.get("/show")
        health = await c.get("/health")
    body = assert_problem(resp, 400, "unsupported_api_version")
    assert body["supported_versions"] == ["1", "2", "3"]
    assert_problem(health, 400, "unsupported_api_version")
    async with client_for(starlette_app(default=None, exclude_paths=["/health"])) as c:
        assert (await c.get("/health")).text == "ok"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v9/show", {}),
        ("/show", {"API-Version": "9"}),
        ("/show", {"API-Version": "<script>alert(1)</script>"}),
        ("/show", {"API-Version": "1.5"}),
        ("/show", {"API-Version": ""}),
        ("/v99999999999999/show", {}),
    ],
)
async def test_unknown_version_is_400_listing_supported(path: str, headers: dict[str, str]) -> None:
    async with client_for(starlette_app()) as c:
        resp = await c.get(path, headers=headers)
    if path.startswith("/v99999999999999"):
        # Too long to be a version: not claimed by the URL strategy, so routing says 404.
        assert resp.status_code == 404
        return
    body = assert_problem(resp, 400, "unsupported_api_version")
    assert body["supported_versions"] == ["1", "2", "3"]
    assert "script" not in resp.text
    assert "API-Version" in resp.headers["vary"]


async def test_conflicting_versions_are_400() -> None:
    async with client_for(starlette_app()) as c:
        resp = await c.get("/v1/show", headers={"API-Version": "2"})
        same = await c.get("/v1/show", headers={"API-Version": "1"})
    assert_problem(resp, 400, "conflicting_api_version")
    assert same.json()["version"] == 1


async def test_non_version_segments_are_not_claimed() -> None:
    async with client_for(starlette_app()) as c:
        resp = await c.get("/videos")
    assert resp.text == "ok"


async def test_iso_date_versions() -> None:
    app = starlette_app(
        versions=["2024-01-01", dt.date(2025, 6, 1), "2025-01-15"],
        default="2025-06-01",
        url_prefix="",
    )
    async with client_for(app) as c:
        by_header = await c.get("/show", headers={"API-Version": "2025-01-15"})
        by_url = await c.get("/2024-01-01/show")
        default = await c.get("/show")
        bad = await c.get("/show", headers={"API-Version": "2025-02-30"})
        near = await c.get("/show", headers={"API-Version": "2025-01-16"})
    assert by_header.json()["version"] == "2025-01-15"
    assert by_url.json()["root_path"] == "/2024-01-01"
    assert default.headers["api-version"] == "2025-06-01"
    for resp in (bad, near):
        body = assert_problem(resp, 400, "unsupported_api_version")
        assert body["supported_versions"] == ["2024-01-01", "2025-01-15", "2025-06-01"]


# --------------------------------------------------------------------------- deprecation


def _unix(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


async def test_deprecated_version_carries_rfc_headers() -> None:
    sunset = dt.date(2099, 12, 31)
    since = dt.date(2025, 1, 1)
    app = starlette_app(
        deprecated={1: Deprecation(sunset=sunset, since=since), 2: None},
        docs_url="https://docs.example/versions/{version}",
    )
    async with client_for(app) as c:
        old = await c.get("/v1/show")
        two = await c.get("/v2/show")
        new = await c.get("/v3/show")
    assert old.headers["deprecation"] == f"@{_unix(since)}"
    assert old.headers["sunset"] == "Thu, 31 Dec 2099 00:00:00 GMT"
    assert email.utils.parsedate_to_datetime(old.headers["sunset"]).date() == sunset
    links = old.headers.get_list("link")
    assert '<https://docs.example/versions/1>; rel="deprecation"; type="text/html"' in links
    assert '<https://docs.example/versions/1>; rel="sunset"; type="text/html"' in links
    assert two.headers["deprecation"].startswith("@")
    assert "sunset" not in two.headers
    assert "deprecation" not in new.headers
    assert "link" not in new.headers


async def test_past_sunset_answers_410() -> None:
    now = [_unix(dt.date(2030, 1, 1)) - 1.0]
    app = starlette_app(deprecated={1: dt.date(2030, 1, 1)}, clock=lambda: now[0])
    async with client_for(app) as c:
        before = await c.get("/v1/show")
        now[0] += 1
        after = await c.get("/v1/show")
        other = await c.get("/v2/show")
    assert before.status_code == 200
    body = assert_problem(after, 410, "api_version_retired")
    assert body["supported_versions"] == ["1", "2", "3"]
    assert after.headers["sunset"] == "Tue, 01 Jan 2030 00:00:00 GMT"
    assert other.status_code == 200


async def test_date_versions_are_deprecated_since_their_successor() -> None:
    app = starlette_app(
        versions=["2024-01-01", "2025-01-15"],
        default="2025-01-15",
        deprecated={"2024-01-01": dt.date(2099, 1, 1)},
    )
    async with client_for(app) as c:
        resp = await c.get("/show", headers={"API-Version": "2024-01-01"})
    assert resp.headers["deprecation"] == f"@{_unix(dt.date(2025, 1, 15))}"


def test_sunset_before_deprecation_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Deprecation(sunset=dt.date(2024, 1, 1), since=dt.date(2025, 1, 1))


# --------------------------------------------------------------------------- migrations


class RenameWeight(VersionChange):
    """v2 renamed Edge.weight to confidence."""

    description = "Edge.weight renamed to confidence"
    paths = ("/edges",)

    def upgrade_request(self, body: Any, ctx: ChangeContext) -> Any:
        if isinstance(body, dict) and "weight" in body:
            body["confidence"] = body.pop("weight")
        return body

    def downgrade_response(self, body: Any, ctx: ChangeContext) -> Any:
        if isinstance(body, dict) and "confidence" in body:
            body["weight"] = body.pop("confidence")
        return body


def _evidence_up(body: Any, ctx: ChangeContext) -> Any:
    # v3 turned the single "source" string into an "evidence" list.
    if isinstance(body, dict) and "source" in body:
        body["evidence"] = [body.pop("source")]
    return body


def _evidence_down(body: Any, ctx: ChangeContext) -> Any:
    if isinstance(body, dict) and "evidence" in body:
        evidence = body.pop("evidence")
        body["source"] = evidence[0] if evidence else None
    return body


EVIDENCE = VersionChange.of(
    upgrade_request=_evidence_up, downgrade_response=_evidence_down, paths=["/edges"]
)
CHANGES: dict[int, Any] = {2: RenameWeight, 3: [EVIDENCE]}


async def create_edge(request: Request) -> Response:
    body = await request.json()
    # The handler knows only the newest (v3) shape.
    assert set(body) == {"regulator", "target", "confidence", "evidence"}, body
    assert int(request.headers["content-length"]) == len(await request.body())
    return JSONResponse({**body, "id": 7}, status_code=201, headers={"ETag": '"abc"'})


async def bad_edge(request: Request) -> Response:
    return Response(
        json.dumps({"type": "about:blank", "status": 409, "confidence": 1}),
        status_code=409,
        media_type=PROBLEM,
    )


def edges_app(framework: str) -> Any:
    if framework == "starlette":
        app: Any = Starlette(
            routes=[
                Route("/edges", create_edge, methods=["POST"]),
                Route("/edges/bad", bad_edge),
            ]
        )
    else:
        app = FastAPI()

        @app.post("/edges", status_code=201)
        async def create(request: Request) -> Response:
            return await create_edge(request)

        @app.get("/edges/bad")
        async def bad(request: Request) -> Response:
            return await bad_edge(request)

    app.add_middleware(VersioningMiddleware, versions=[1, 2, 3], default=3, changes=CHANGES)
    return app


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
@pytest.mark.parametrize(
    ("version", "sent", "expected"),
    [
        (
            1,
            {"regulator": "lacI", "target": "lacZ", "weight": 0.5, "source": "pmid:1"},
            {"regulator": "lacI", "target": "lacZ", "weight": 0.5, "source": "pmid:1", "id": 7},
        ),
        (
            2,
            {"regulator": "lacI", "target": "lacZ", "confidence": 0.5, "source": "pmid:1"},
            {"regulator": "lacI", "target": "lacZ", "confidence": 0.5, "source": "pmid:1", "id": 7},
        ),
        (
            3,
            {"regulator": "lacI", "target": "lacZ", "confidence": 0.5, "evidence": ["pmid:1"]},
            {
                "regulator": "lacI",
                "target": "lacZ",
                "confidence": 0.5,
                "evidence": ["pmid:1"],
                "id": 7,
            },
        ),
    ],
)
async def test_chain_of_three_versions_migrates_requests_and_responses(
    framework: str, version: int, sent: dict[str, Any], expected: dict[str, Any]
) -> None:
    async with client_for(edges_app(framework)) as c:
        resp = await c.post(f"/v{version}/edges", json=sent)
    assert resp.status_code == 201, resp.text
    assert resp.json() == expected
    assert int(resp.headers["content-length"]) == len(resp.content)
    if version < 3:
        assert "etag" not in resp.headers  # the bytes changed: the old validator is void
    else:
        assert resp.headers["etag"] == '"abc"'


async def test_migrations_skip_other_paths_and_problem_bodies() -> None:
    seen: list[Any] = []

    async def other(request: Request) -> Response:
        seen.append(await request.json())
        return JSONResponse({"confidence": 1})

    app = Starlette(
        routes=[Route("/edges/bad", bad_edge), Route("/other", other, methods=["POST"])]
    )
    app.add_middleware(VersioningMiddleware, versions=[1, 2, 3], default=3, changes=CHANGES)
    async with client_for(app) as c:
        problem = await c.get("/v1/edges/bad")
        untouched = await c.post("/v1/other", json={"weight": 1, "source": "s"})
    assert problem.json()["confidence"] == 1  # problem+json is never migrated
    assert seen == [{"weight": 1, "source": "s"}]  # outside the changes' paths
    assert untouched.json() == {"confidence": 1}


async def test_streamed_json_responses_are_migrated_whole() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"confidence": 0.'
        yield b'25, "evidence": ["a", "b"]}'

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(), media_type="application/json")

    app = Starlette(routes=[Route("/edges", stream)])
    app.add_middleware(VersioningMiddleware, versions=[1, 2, 3], default=3, changes=CHANGES)
    async with client_for(app) as c:
        v1 = await c.get("/v1/edges")
        v3 = await c.get("/v3/edges")
    assert v1.json() == {"weight": 0.25, "source": "a"}
    assert v1.headers["content-length"] == str(len(v1.content))
    assert v3.json() == {"confidence": 0.25, "evidence": ["a", "b"]}


async def test_malformed_json_passes_migrations_untouched() -> None:
    seen: list[bytes] = []

    async def raw(request: Request) -> Response:
        seen.append(await request.body())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/edges", raw, methods=["POST"])])
    app.add_middleware(VersioningMiddleware, versions=[1, 2, 3], default=3, changes=CHANGES)
    async with client_for(app) as c:
        await c.post(
            "/v1/edges", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert seen == [b"{not json"]


async def test_migrated_request_bodies_are_size_capped() -> None:
    app = Starlette(routes=[Route("/edges", create_edge, methods=["POST"])])
    app.add_middleware(
        VersioningMiddleware, versions=[1, 2, 3], default=3, changes=CHANGES, max_body_size=100
    )
    async with client_for(app) as c:
        resp = await c.post("/v1/edges", json={"regulator": "x" * 200})
    assert_problem(resp, 413, "payload_too_large")


def _naive_up(body: Any, ctx: ChangeContext) -> Any:
    body["confidence"] = body.pop("weight")  # assumes an object with "weight"
    return body


def _refusing_up(body: Any, ctx: ChangeContext) -> Any:
    raise ValidationFailed("v1 edges need a weight.", errors=[])


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_request_migration_failing_on_a_bad_body_is_400_not_500(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    naive = VersionChange.of(upgrade_request=_naive_up, paths=["/edges"])
    app: Any = Starlette(routes=[Route("/edges", create_edge, methods=["POST"])])
    if framework == "fastapi":
        app = FastAPI()
        app.add_api_route("/edges", create_edge, methods=["POST"])
    app.add_middleware(VersioningMiddleware, versions=[1, 2], default=2, changes={2: naive})
    async with client_for(app) as c:
        listed = await c.post("/v1/edges", json=["hunter2-secret", 1])
        missing = await c.post("/v1/edges", json={"regulator": "hunter2-secret"})
    for resp in (listed, missing):
        body = assert_problem(resp, 400, "request_migration_failed")
        assert "hunter2" not in resp.text
        assert "version 1" in body["detail"]
    # The traceback goes to the log: a migration bug must stay visible.
    failures = [r for r in caplog.records if r.name == "gennet_toolkit.api_versioning"]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)


async def test_request_migration_may_refuse_with_its_own_problem() -> None:
    refusing = VersionChange.of(upgrade_request=_refusing_up, paths=["/edges"])
    app = Starlette(routes=[Route("/edges", create_edge, methods=["POST"])])
    app.add_middleware(VersioningMiddleware, versions=[1, 2], default=2, changes={2: refusing})
    async with client_for(app) as c:
        resp = await c.post("/v1/edges", json={"regulator": "lacI"})
    assert_problem(resp, 422, "validation_failed")


def test_changes_keyed_by_the_oldest_or_unknown_version_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="oldest"):
        VersioningMiddleware(show, [1, 2], 2, changes={1: RenameWeight})
    with pytest.raises(ConfigurationError, match="unknown version"):
        VersioningMiddleware(show, [1, 2], 2, changes={5: RenameWeight})
    with pytest.raises(ConfigurationError, match="VersionChange"):
        VersioningMiddleware(show, [1, 2], 2, changes={2: [object()]})


# --------------------------------------------------------------------------- app integrity


@pytest.mark.parametrize("path", ["/v1/boom", "/boom"])
async def test_app_exception_handlers_run_for_versioned_routes(path: str) -> None:
    async with client_for(starlette_app()) as c:
        resp = await c.get(path)
    assert resp.status_code == 418
    assert resp.json()["handled"] is True
    assert resp.headers["api-version"] == str(resp.json()["v"])


async def test_fastapi_exception_handlers_and_routes_under_prefix() -> None:
    app = FastAPI()

    @app.get("/genes/{gene_id}")
    async def read(gene_id: str, request: Request) -> dict[str, Any]:
        if gene_id == "missing":
            raise HTTPException(404, "no such gene")
        if gene_id == "boom":
            raise Boom
        return {"id": gene_id, "v": get_api_version(request)}

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> JSONResponse:
        return JSONResponse({"handled": True}, status_code=418)

    app.add_middleware(VersioningMiddleware, versions=[1, 2], default=2)
    async with client_for(app) as c:
        ok = await c.get("/v1/genes/TP53")
        missing = await c.get("/v1/genes/missing")
        boomed = await c.get("/v1/genes/boom")
        docs = await c.get("/v1/openapi.json")
    assert ok.json() == {"id": "TP53", "v": 1}
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no such gene"}
    assert boomed.status_code == 418
    assert docs.status_code == 200


async def test_lifespan_and_websockets_keep_working() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"v": get_api_version(websocket)})
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=lifespan)
    app.add_middleware(VersioningMiddleware, versions=[1, 2], default=2)

    # Lifespan, driven as a server would.
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def lifespan_receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def lifespan_send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, lifespan_send)
    assert events == ["startup", "shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    async def websocket(path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        messages = [{"type": "websocket.connect"}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await anyio.sleep(1)
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: dict[str, Any]) -> None:
            out.append(message)

        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "scheme": "ws",
            "server": ("test", 80),
        }
        with anyio.fail_after(5):
            await app(scope, receive, send)
        return out

    v1 = await websocket("/v1/ws")
    assert [m["type"] for m in v1] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert json.loads(v1[1]["text"]) == {"v": 1}
    default = await websocket("/ws")
    assert json.loads(default[1]["text"]) == {"v": 2}
    refused = await websocket("/v7/ws")
    assert refused == [{"type": "websocket.close", "code": 1008}]


async def test_bare_asgi_app_sees_version_and_root_path() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(version=get_api_version(scope), root=scope["root_path"], path=scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with client_for(VersioningMiddleware(app, [1, 2], 2)) as c:
        resp = await c.get("/v1/x")
    assert resp.status_code == 204
    assert seen == {"version": 1, "root": "/v1", "path": "/v1/x"}


def test_get_api_version_without_middleware_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="VersioningMiddleware"):
        get_api_version({"type": "http"})


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("versions", "default", "kwargs"),
    [
        ([], None, {}),
        ([1, "2025-01-01"], None, {}),
        ([1, 2], 3, {}),
        ([1, 2], 2, {"strategies": ("cookie",)}),
        ([1, 2], 2, {"deprecated": {5: None}}),
        ([True], None, {}),
        (["x"], None, {}),
    ],
)
def test_bad_configuration_is_refused(
    versions: list[Any], default: Any, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        VersioningMiddleware(show, versions, default, **kwargs)


async def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_API_VERSIONS", "1, 2,3")
    monkeypatch.setenv("APP_API_DEFAULT_VERSION", "2")
    monkeypatch.setenv("APP_API_VERSION_STRATEGIES", "header")
    monkeypatch.setenv("APP_API_VERSION_HEADER", "Gennet-Version")
    monkeypatch.setenv("APP_API_DEPRECATED", "1=2099-01-01,2")

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = VersioningMiddleware.from_env(bare, prefix="APP_")
    assert (mw.versions, mw.default, mw.strategies) == ((1, 2, 3), 2, ("header",))
    assert set(mw.deprecations) == {1, 2}
    async with client_for(mw) as c:
        resp = await c.get("/x", headers={"Gennet-Version": "1"})
    assert resp.headers["gennet-version"] == "1"
    assert resp.headers["vary"] == "Gennet-Version"
    monkeypatch.setenv("APP_API_DEPRECATED", "1=soon")
    with pytest.raises(ConfigurationError):
        VersioningMiddleware.from_env(show, prefix="APP_")


def test_public_names_match_all() -> None:
    public = {
        n
        for n in dir(api_versioning)
        if not n.startswith("_") and not inspect.ismodule(getattr(api_versioning, n))
    }
    assert set(api_versioning.__all__) == public - {"annotations"}


_: Callable[..., Any] = show


@settings(max_examples=60, deadline=None)
@given(
    header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    segment=st.text(alphabet="v0123456789-/.%", max_size=12),
)
def test_any_version_input_gets_200_400_or_404_never_500(header: str, segment: str) -> None:
    # A path starting with "//" would be a network-path reference to the client.
    path = "/" + f"{segment}/show".lstrip("/")

    async def run() -> httpx.Response:
        app = starlette_app(strategies=("url", "header", "media_type", "query"))
        async with client_for(app) as c:
            return await c.get(
                f"{path}?version={header}",
                headers={
                    "API-Version": header,
                    "Accept": f"application/vnd.gennet+json; version={header}",
                },
            )

    resp = anyio.run(run)
    assert resp.status_code in {200, 400, 404}
    if resp.status_code == 400:
        assert resp.headers["content-type"] == PROBLEM
