"""Tests for gennet_toolkit.validation: decorators, parse_body, size limits, domain types."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gennet_toolkit import validation
from gennet_toolkit.exceptions import GenNetError, InvalidJSON, PayloadTooLarge, ValidationFailed
from gennet_toolkit.validation import (
    BodySizeLimitMiddleware,
    EnsemblGeneId,
    GeneSymbol,
    HumanGeneSymbol,
    MouseGeneSymbol,
    NonEmptyStr,
    Probability,
    TypeRegistry,
    gene_symbol_convention,
    parse_body,
    pattern_type,
    validate_body,
    validate_query,
)

pytestmark = pytest.mark.anyio

SECRET = "hunter2-secret-value"
PROBLEM = "application/problem+json"


class GeneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: GeneSymbol
    ensembl: EnsemblGeneId | None = None
    name: NonEmptyStr


class InteractionIn(BaseModel):
    regulator: GeneSymbol
    target: GeneSymbol
    weight: Probability


class NetworkIn(BaseModel):
    name: NonEmptyStr
    genes: list[GeneIn]
    interactions: list[InteractionIn] = []


class GeneQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: list[GeneSymbol] = []
    min_weight: Probability = 0.0
    limit: Annotated[int, Field(ge=1, le=100)] = 10


# --------------------------------------------------------------------------- apps


@validate_body(NetworkIn)
async def create_network(request: Request, network: NetworkIn) -> Response:
    raw = await request.body()  # the raw bytes stay readable after validation
    return JSONResponse({"name": network.name, "genes": len(network.genes), "raw": len(raw)})


@validate_body(GeneIn)
def create_gene_sync(request: Request, gene: GeneIn) -> Response:
    return JSONResponse({"symbol": gene.symbol})


@validate_body(GeneIn, max_size=64)
async def create_gene_small(request: Request, gene: GeneIn) -> Response:
    return JSONResponse({"symbol": gene.symbol})


@validate_body(list[InteractionIn])
async def create_interactions(request: Request, items: list[InteractionIn]) -> Response:
    return JSONResponse({"count": len(items)})


@validate_query(GeneQuery)
async def list_genes(request: Request, query: GeneQuery) -> Response:
    return JSONResponse(query.model_dump())


@validate_query(GeneQuery)
def list_genes_sync(request: Request, query: GeneQuery) -> Response:
    return JSONResponse(query.model_dump())


@validate_body(GeneIn, raise_errors=True)
async def create_gene_raising(request: Request, gene: GeneIn) -> Response:
    return JSONResponse({"symbol": gene.symbol})


async def _gennet_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GenNetError)
    return JSONResponse({"handled": exc.code}, status_code=exc.status_code)


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/networks", create_network, methods=["POST"]),
            Route("/genes", create_gene_sync, methods=["POST"]),
            Route("/small", create_gene_small, methods=["POST"]),
            Route("/interactions", create_interactions, methods=["POST"]),
            Route("/genes", list_genes, methods=["GET"]),
            Route("/genes-sync", list_genes_sync, methods=["GET"]),
            Route("/raising", create_gene_raising, methods=["POST"]),
        ],
        exception_handlers={GenNetError: _gennet_handler},
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=starlette_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


NETWORK = {
    "name": "lac operon",
    "genes": [
        {"symbol": "lacZ", "name": "beta-galactosidase"},
        {"symbol": "TP53", "ensembl": "ENSG00000141510.17", "name": "p53"},
    ],
    "interactions": [{"regulator": "lacI", "target": "lacZ", "weight": 0.9}],
}


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["code"] == code
    assert "traceback" not in resp.text.lower()
    return body


# --------------------------------------------------------------------------- decorators


async def test_valid_body_reaches_async_endpoint_as_model(client: httpx.AsyncClient) -> None:
    raw = json.dumps(NETWORK).encode()
    resp = await client.post("/networks", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 200
    assert resp.json()["genes"] == 2
    assert resp.json()["raw"] == len(raw)


async def test_valid_body_reaches_sync_endpoint(client: httpx.AsyncClient) -> None:
    resp = await client.post("/genes", json={"symbol": " Trp53 ", "name": "p53"})
    assert resp.status_code == 200
    assert resp.json() == {"symbol": "Trp53"}


async def test_generic_types_validate_as_bodies(client: httpx.AsyncClient) -> None:
    items = [{"regulator": "rpoS", "target": "lacZ", "weight": 0.5}] * 3
    resp = await client.post("/interactions", json=items)
    assert resp.json() == {"count": 3}
    bad = await client.post("/interactions", json=[*items, {"regulator": "rpoS"}])
    body = assert_problem(bad, 422, "validation_failed")
    assert {e["pointer"] for e in body["errors"]} == {"#/3/target", "#/3/weight"}


async def test_schema_violation_is_422_with_pointers_and_no_values(
    client: httpx.AsyncClient,
) -> None:
    bad = {
        "name": "   ",
        "genes": [{"symbol": SECRET, "name": "x", "password": SECRET}],
        "interactions": [{"regulator": "lacI", "target": "lacZ", "weight": 1.5}],
    }
    resp = await client.post("/networks", json=bad)
    body = assert_problem(resp, 422, "validation_failed")
    pointers = {e["pointer"] for e in body["errors"]}
    assert pointers == {
        "#/name",
        "#/genes/0/symbol",
        "#/genes/0/password",
        "#/interactions/0/weight",
    }
    assert all(e["location"] == "body" and e["detail"] for e in body["errors"])
    assert SECRET not in resp.text
    assert body["instance"] == "/networks"


async def test_malformed_json_is_400_not_422(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/networks",
        content=b'{"name": "' + SECRET.encode() + b'", genes: [}',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(resp, 400, "invalid_json")
    assert SECRET not in resp.text
    assert "line 1" in body["detail"]


@pytest.mark.parametrize("payload", [b"", b"\xff\xfe\x00", b"[1, 2", b"nul"])
async def test_empty_or_undecodable_body_is_400(client: httpx.AsyncClient, payload: bytes) -> None:
    resp = await client.post(
        "/networks", content=payload, headers={"content-type": "application/json"}
    )
    assert_problem(resp, 400, "invalid_json")


async def test_wrong_json_type_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post("/networks", json=[1, 2])
    body = assert_problem(resp, 422, "validation_failed")
    assert body["errors"][0]["pointer"] == "#"


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_missing_or_foreign_content_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    resp = await client.post("/networks", content=json.dumps(NETWORK), headers=headers)
    body = assert_problem(resp, 415, "unsupported_media_type")
    assert body["accepted"] == ["application/json"]
    if content_type:
        assert content_type not in body["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=UTF-8", "application/vnd.gennet+json"],
)
async def test_json_media_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    resp = await client.post(
        "/networks", content=json.dumps(NETWORK), headers={"content-type": content_type}
    )
    assert resp.status_code == 200


async def test_declared_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    resp = await client.post("/small", json={"symbol": "TP53", "name": "x" * 100})
    body = assert_problem(resp, 413, "payload_too_large")
    assert body["max_size"] == 64
    assert resp.headers["connection"] == "close"


async def test_streamed_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 40

    resp = await client.post(
        "/small", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(resp, 413, "payload_too_large")


@pytest.mark.parametrize("length", ["abc", "-1", "+5", "1e3", "9" * 40])
async def test_bad_content_length_is_400(length: str) -> None:
    received: list[str] = []

    async def receive() -> dict[str, Any]:
        received.append("x")
        return {"type": "http.request", "body": b"{}", "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", length.encode())]
    with pytest.raises(GenNetError) as info:
        await parse_body(receive, GeneIn, headers=headers)
    assert info.value.status_code == 400
    assert received == []


async def test_raise_errors_hands_problems_to_the_app_handler(client: httpx.AsyncClient) -> None:
    resp = await client.post("/raising", json={"symbol": "not a gene"})
    assert resp.status_code == 422
    assert resp.json() == {"handled": "validation_failed"}


async def test_query_is_validated_and_coerced(client: httpx.AsyncClient) -> None:
    resp = await client.get("/genes?symbol=lacZ&symbol=TP53&min_weight=0.25&limit=5")
    assert resp.status_code == 200
    assert resp.json() == {"symbol": ["lacZ", "TP53"], "min_weight": 0.25, "limit": 5}
    resp = await client.get("/genes-sync?symbol=rpoS")
    assert resp.json()["symbol"] == ["rpoS"]


async def test_query_errors_name_the_parameter_without_the_value(
    client: httpx.AsyncClient,
) -> None:
    resp = await client.get(f"/genes?limit=0&min_weight=2&symbol={SECRET}&lmit=5")
    body = assert_problem(resp, 422, "validation_failed")
    names = {e["parameter"] for e in body["errors"]}
    assert names == {"limit", "min_weight", "symbol", "lmit"}
    assert all(e["location"] == "query" for e in body["errors"])
    assert SECRET not in resp.text


async def test_repeated_scalar_query_parameter_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.get("/genes?limit=1&limit=2")
    assert_problem(resp, 422, "validation_failed")


async def test_body_and_query_decorators_stack() -> None:
    class Paging(BaseModel):
        limit: int = 10

    @validate_body(GeneIn)
    @validate_query(Paging)
    async def create(request: Request, paging: Paging, gene: GeneIn) -> Response:
        return JSONResponse({"limit": paging.limit, "symbol": gene.symbol})

    app = Starlette(routes=[Route("/g", create, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        resp = await c.post("/g?limit=3", json={"symbol": "rpoS", "name": "sigma S"})
        bad = await c.post("/g?limit=x", json={"symbol": "rpoS", "name": "sigma S"})
    assert resp.json() == {"limit": 3, "symbol": "rpoS"}
    assert_problem(bad, 422, "validation_failed")


def test_decorators_keep_sync_and_async_nature_and_metadata() -> None:
    assert inspect.iscoroutinefunction(list_genes)
    assert not inspect.iscoroutinefunction(list_genes_sync)
    # A sync body endpoint becomes async (the body must be awaited) and runs in a thread.
    assert inspect.iscoroutinefunction(create_gene_sync)
    assert create_network.__name__ == "create_network"
    assert create_network.__wrapped__ is not None  # type: ignore[attr-defined]


def test_validate_query_refuses_non_models() -> None:
    with pytest.raises(TypeError):
        validate_query(int)  # type: ignore[type-var]


# --------------------------------------------------------------------------- parse_body


def _receiver(chunks: list[bytes]) -> tuple[Any, list[int]]:
    calls = [0]

    async def receive() -> dict[str, Any]:
        i = calls[0]
        calls[0] += 1
        if i >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    return receive, calls


async def test_body_already_read_is_still_held_to_the_limit() -> None:
    # Starlette caches a body read earlier (by another decorator or the endpoint's
    # middleware); the cached bytes must not bypass max_size.
    @validate_body(GeneIn, max_size=16)
    async def endpoint(request: Request, gene: GeneIn) -> Response:
        return JSONResponse({"symbol": gene.symbol})

    payload = json.dumps({"symbol": "TP53", "name": "p53"}).encode()
    chunks = [{"type": "http.request", "body": payload, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/genes",
        "headers": [(b"content-type", b"application/json")],
    }
    request = Request(scope, receive)
    assert await request.body() == payload
    response = await endpoint(request)
    assert response.status_code == 413
    assert json.loads(bytes(response.body))["code"] == "payload_too_large"


async def test_parse_body_works_on_bare_asgi_receive() -> None:
    receive, _ = _receiver([b'{"symbol": "lac', b'Z", "name": "b-gal"}'])
    gene = await parse_body(receive, GeneIn, headers=[(b"content-type", b"application/json")])
    assert gene.symbol == "lacZ"


async def test_parse_body_reads_headers_from_scope() -> None:
    receive, _ = _receiver([b'{"symbol": "TP53", "name": "p53"}'])
    scope = {"type": "http", "headers": [(b"content-type", b"application/json")]}
    gene = await parse_body(receive, GeneIn, scope=scope)
    assert gene.symbol == "TP53"


async def test_parse_body_refuses_declared_length_before_reading() -> None:
    receive, calls = _receiver([b"{}"])
    headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
    with pytest.raises(PayloadTooLarge):
        await parse_body(receive, GeneIn, headers=headers, max_size=100)
    assert calls[0] == 0


async def test_parse_body_stops_reading_once_over_the_limit() -> None:
    receive, calls = _receiver([b"x" * 60] * 100)
    with pytest.raises(PayloadTooLarge):
        await parse_body(
            receive, GeneIn, headers=[(b"content-type", b"application/json")], max_size=100
        )
    assert calls[0] == 2  # 60 then 120 > 100: the other 98 chunks are never read


async def test_parse_body_reports_client_disconnect() -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(validation.ClientDisconnected):
        await parse_body(receive, GeneIn, headers=[(b"content-type", b"application/json")])


async def test_parse_body_translates_json_and_schema_errors() -> None:
    ct = [(b"content-type", b"application/json")]
    receive, _ = _receiver([b"{oops"])
    with pytest.raises(InvalidJSON):
        await parse_body(receive, GeneIn, headers=ct)
    receive, _ = _receiver([b'{"symbol": "TP53"}'])
    with pytest.raises(ValidationFailed) as info:
        await parse_body(receive, GeneIn, headers=ct)
    assert [e.pointer for e in info.value.errors] == ["/name"]


async def test_field_named_like_a_location_keeps_its_body_pointer() -> None:
    class Step(BaseModel):
        path: int
        query: int

    receive, _ = _receiver([b'{"path": "x", "query": "y"}'])
    with pytest.raises(ValidationFailed) as info:
        await parse_body(receive, Step, headers=[(b"content-type", b"application/json")])
    assert [(e.location, e.pointer) for e in info.value.errors] == [
        ("body", "/path"),
        ("body", "/query"),
    ]


async def test_user_validator_messages_that_echo_the_value_are_scrubbed() -> None:
    class Login(BaseModel):
        password: str

        @field_validator("password")
        @classmethod
        def strong(cls, v: str) -> str:
            raise ValueError(f"password {v} is too weak")

    receive, _ = _receiver([json.dumps({"password": SECRET}).encode()])
    with pytest.raises(ValidationFailed) as info:
        await parse_body(receive, Login, headers=[(b"content-type", b"application/json")])
    problem = json.dumps(info.value.to_problem())
    assert SECRET not in problem
    assert info.value.errors[0].pointer == "/password"


async def test_parse_body_inside_fastapi_endpoint() -> None:
    app = FastAPI()

    @app.post("/genes")
    async def create(request: Request) -> Response:
        try:
            gene = await parse_body(request.receive, GeneIn, headers=request.headers.raw)
        except GenNetError as exc:
            return validation.problem_response(exc, request)
        return JSONResponse({"symbol": gene.symbol})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        ok = await c.post("/genes", json={"symbol": "HLA-A", "name": "hla"})
        assert ok.json() == {"symbol": "HLA-A"}
        bad = await c.post("/genes", json={"symbol": "hla-a", "name": SECRET * 0 + "n"})
        assert_problem(bad, 422, "validation_failed")


# --------------------------------------------------------------------------- middleware


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    """Bare ASGI app that reads the whole body and answers its length."""
    total = 0
    while True:
        msg = await receive()
        total += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    body = str(total).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _post(app: Any, content: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await c.post("/upload", content=content, headers=headers or {})


async def test_middleware_passes_bodies_within_the_limit() -> None:
    resp = await _post(BodySizeLimitMiddleware(echo_length, max_size=100), b"x" * 100)
    assert resp.text == "100"


async def test_middleware_refuses_declared_length_without_calling_the_app() -> None:
    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(1)
        await echo_length(scope, receive, send)

    resp = await _post(BodySizeLimitMiddleware(app, max_size=10), b"x" * 11)
    assert_problem(resp, 413, "payload_too_large")
    assert called == []


async def test_middleware_cuts_streamed_bodies_at_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"x" * 10

    resp = await _post(BodySizeLimitMiddleware(echo_length, max_size=25), chunks())
    assert_problem(resp, 413, "payload_too_large")


async def test_middleware_under_fastapi_with_bad_content_length() -> None:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_middleware(BodySizeLimitMiddleware, max_size=50)
    ok = await _post(app, b"x" * 50)
    assert ok.json() == {"size": 50}
    big = await _post(app, b"x" * 51)
    assert_problem(big, 413, "payload_too_large")

    scope_headers = [(b"content-length", b"12abc")]
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/upload", "headers": scope_headers}
    await BodySizeLimitMiddleware(app, max_size=50)(scope, receive, send)
    assert sent[0]["status"] == 400


class Upload(BaseModel):
    data: str


async def _oversized_json_chunks() -> AsyncIterator[bytes]:
    # No Content-Length: the limit can only be found while the body streams.
    yield b'{"data": "'
    for _ in range(20):
        yield b"x" * 10
    yield b'"}'


async def test_middleware_answers_413_when_fastapi_wraps_the_read_error() -> None:
    # FastAPI turns any exception raised while it reads a body parameter into its own
    # 400 "error parsing the body"; the middleware must answer 413 regardless.
    app = FastAPI()
    reached: list[int] = []

    @app.post("/upload")
    async def upload(item: Upload) -> dict[str, int]:
        reached.append(1)
        return {"size": len(item.data)}

    app.add_middleware(BodySizeLimitMiddleware, max_size=50)
    headers = {"content-type": "application/json"}
    big = await _post(app, _oversized_json_chunks(), headers)
    body = assert_problem(big, 413, "payload_too_large")
    assert big.headers["connection"] == "close"
    assert body["max_size"] == 50
    assert reached == []
    ok = await _post(app, b'{"data": "small"}', headers)
    assert ok.json() == {"size": 5}


async def test_middleware_answers_413_when_the_app_swallows_the_refusal() -> None:
    # An app that catches the error, reads on and answers itself: the client still
    # gets the 413, the app's later reads see a disconnect and its reply is dropped.
    after: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:
            after.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"mine"})

    resp = await _post(BodySizeLimitMiddleware(app, max_size=25), _oversized_json_chunks())
    assert_problem(resp, 413, "payload_too_large")
    assert after == ["http.disconnect"]


async def test_middleware_reraises_when_response_already_started() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 10

    with pytest.raises(PayloadTooLarge):
        await _post(BodySizeLimitMiddleware(app, max_size=15), chunks())


async def test_middleware_passes_other_scopes_and_excluded_paths() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "http":
            await echo_length(scope, receive, send)

    mw = BodySizeLimitMiddleware(app, max_size=1, exclude_paths=["/upload"])
    await mw({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    resp = await _post(mw, b"x" * 100)
    assert resp.text == "100"
    assert seen == ["lifespan", "http"]


def test_middleware_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_MAX_BODY_SIZE", "2048")
    monkeypatch.setenv("APP_MAX_BODY_EXCLUDE", "/a, /b")
    mw = BodySizeLimitMiddleware.from_env(echo_length, prefix="APP_")
    assert (mw.max_size, mw.exclude_paths) == (2048, ("/a", "/b"))
    monkeypatch.setenv("APP_MAX_BODY_SIZE", "lots")
    with pytest.raises(ValueError, match="MAX_BODY_SIZE"):
        BodySizeLimitMiddleware.from_env(echo_length, prefix="APP_")


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("symbol", "convention"),
    [
        ("TP53", "human"),
        ("C1orf112", "human"),
        ("HLA-A", "human"),
        ("NKX2-1", "human"),
        ("MT-CO1", "human"),
        ("Trp53", "mouse"),
        ("Hoxa1", "mouse"),
        ("Gm10000", "mouse"),
        ("0610005C13Rik", "mouse"),
        ("lacZ", "bacterial"),
        ("rpoS", "bacterial"),
        ("gyr", "bacterial"),
    ],
)
def test_gene_symbol_conventions_are_recognised(symbol: str, convention: str) -> None:
    assert gene_symbol_convention(symbol) == convention
    assert TypeAdapter(GeneSymbol).validate_python(f"  {symbol} ") == symbol


@pytest.mark.parametrize(
    "symbol",
    ["tp53", "TP 53", "", "   ", "lacZZ", "lacz1", "TP53;DROP", "<b>", "A" * 33, "-TP53", "tRP53"],
)
def test_invalid_gene_symbols_are_rejected_without_echo(symbol: str) -> None:
    with pytest.raises(ValidationError) as info:
        TypeAdapter(GeneSymbol).validate_python(symbol)
    for err in info.value.errors(include_input=False):
        if symbol.strip():
            assert symbol not in err["msg"]


def test_species_specific_symbol_types() -> None:
    TypeAdapter(HumanGeneSymbol).validate_python("TP53")
    TypeAdapter(MouseGeneSymbol).validate_python("Trp53")
    with pytest.raises(ValidationError):
        TypeAdapter(HumanGeneSymbol).validate_python("Trp53")
    with pytest.raises(ValidationError):
        TypeAdapter(MouseGeneSymbol).validate_python("lacZ")


@pytest.mark.parametrize(
    "gene_id", ["ENSG00000141510", "ENSG00000141510.17", "ENSMUSG00000059552", "ENSDARG00000000001"]
)
def test_ensembl_ids_are_accepted(gene_id: str) -> None:
    assert TypeAdapter(EnsemblGeneId).validate_python(gene_id) == gene_id


@pytest.mark.parametrize(
    "gene_id",
    [
        "ENSG0000014151",
        "ENST00000269305",
        "ensg00000141510",
        "ENSG00000141510.",
        "TP53",
        "ENSG" + "0" * 40,
    ],
)
def test_bad_ensembl_ids_are_rejected(gene_id: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(EnsemblGeneId).validate_python(gene_id)


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_probability_accepts_unit_interval(value: float) -> None:
    assert TypeAdapter(Probability).validate_python(value) == value


@pytest.mark.parametrize("raw", [b"-0.1", b"1.0001", b"true", b"NaN", b"1e999", b'"abc"'])
def test_probability_rejects_out_of_range_and_non_finite(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Probability).validate_json(raw)
    with pytest.raises(ValidationError):
        TypeAdapter(Probability).validate_python(float("nan"))


def test_non_empty_str_strips_and_bounds() -> None:
    ta = TypeAdapter(NonEmptyStr)
    assert ta.validate_python("  x ") == "x"
    for bad in ["", "   ", "x" * 1025]:
        with pytest.raises(ValidationError):
            ta.validate_python(bad)
    narrow = TypeAdapter(Annotated[NonEmptyStr, Field(max_length=3)])
    with pytest.raises(ValidationError):
        narrow.validate_python("abcd")


def test_pattern_type_and_registry_build_models_by_name() -> None:
    uniprot = pattern_type("UniProtAccession", r"[OPQ][0-9][A-Z0-9]{3}[0-9]", max_length=10)
    reg = TypeRegistry.with_builtins()
    reg.register("UniProtAccession", uniprot)
    params = reg.model("Params", {"gene": "GeneSymbol", "protein": "UniProtAccession"})
    ok = params.model_validate({"gene": "TP53", "protein": "P04637"})
    assert ok.model_dump() == {"gene": "TP53", "protein": "P04637"}
    with pytest.raises(ValidationError) as info:
        params.model_validate({"gene": "TP53", "protein": "X0000X", "extra": 1})
    codes = {e["type"] for e in info.value.errors()}
    assert codes == {"uni_prot_accession", "extra_forbidden"}
    assert "X0000X" not in json.dumps(info.value.errors(include_input=False, include_url=False))


def test_registries_are_independent_and_refuse_silent_overwrites() -> None:
    a = TypeRegistry.with_builtins()
    b = TypeRegistry()
    a.register("Weight", Probability)
    assert "Weight" in a
    assert "Weight" not in b
    assert len(b) == 0
    with pytest.raises(ValueError, match="already registered"):
        a.register("Weight", NonEmptyStr)
    a.register("Weight", NonEmptyStr, replace=True)
    with pytest.raises(ValueError, match="identifier"):
        a.register("not a name", NonEmptyStr)
    with pytest.raises(KeyError, match="unknown type"):
        a.model("M", {"x": "Nope"})
    opt = a.model("Opt", {"gene": "GeneSymbol"}, optional=frozenset({"gene"}))
    assert opt().model_dump() == {"gene": None}


def test_domain_types_publish_json_schema() -> None:
    schema = NetworkIn.model_json_schema()
    gene = schema["$defs"]["GeneIn"]["properties"]["symbol"]
    assert gene["maxLength"] == 32
    assert "HGNC" in gene["description"]
    weight = schema["$defs"]["InteractionIn"]["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (0.0, 1.0)


def test_public_names_match_all() -> None:
    public = {n for n in dir(validation) if not n.startswith("_")}
    modules = {"annotations"}
    assert set(validation.__all__) == {
        n for n in public - modules if not inspect.ismodule(getattr(validation, n))
    }


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=60, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/json; charset=utf-16", "", "a/b+json"]
    ),
)
def test_any_input_gets_a_4xx_problem_never_a_500(body: bytes, content_type: str) -> None:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=starlette_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            headers = {"content-type": content_type} if content_type else {}
            return await c.post("/networks", content=body, headers=headers)

    resp = anyio.run(run)
    assert resp.status_code in {200, 400, 413, 415, 422}
    if resp.status_code != 200:
        assert resp.headers["content-type"] == PROBLEM


async def test_problem_instance_is_the_route_template_not_the_client_path() -> None:
    @validate_body(GeneIn)
    async def put_gene(request: Request, gene: GeneIn) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/genes/{symbol}", put_gene, methods=["PUT"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        resp = await c.put("/genes/private-path-value", json={"symbol": 5})
    assert resp.status_code == 422
    assert resp.json()["instance"] == "/genes/{symbol}"
    assert "private-path-value" not in resp.text
