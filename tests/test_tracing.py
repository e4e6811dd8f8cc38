"""TracingMiddleware, outbound propagation, @traced and setup_tracing.

Spans go to an InMemorySpanExporter on a provider passed explicitly; the global
provider is only ever set inside a subprocess.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from gennet_toolkit import tracing
from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.tracing import (
    TracingMiddleware,
    client_span,
    current_span_id,
    current_trace_id,
    inject_headers,
    parse_traceparent,
    setup_tracing,
    traced,
)
from gennet_toolkit.types import Message, Receive, Scope, Send

TID = "12345678901234567890123456789012"
PID = "1234567890123456"
VALID = f"00-{TID}-{PID}-01"

pytestmark = pytest.mark.anyio


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


def spans(exporter: InMemorySpanExporter, kind: SpanKind | None = None) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if kind is None or s.kind is kind]


def server_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = spans(exporter, SpanKind.SERVER)
    return span


def outbound_app(provider: TracerProvider, calls_param: str = "calls") -> Starlette:
    """Like the W3C harness endpoint: make N outgoing calls, answer with their headers."""

    async def calls(request: Request) -> JSONResponse:
        n = int(request.query_params.get(calls_param, "1"))
        sent = [inject_headers({}, method="POST", tracer_provider=provider) for _ in range(n)]
        return JSONResponse({"sent": sent, "trace_id": current_trace_id()})

    async def fail(request: Request) -> Response:
        raise RuntimeError("boom")

    async def status(request: Request) -> Response:
        return PlainTextResponse("x", status_code=int(request.path_params["code"]))

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.path_params["item_id"]})

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(20):
                yield f"{i}\n".encode()

        return StreamingResponse(chunks())

    inner = Starlette(routes=[Route("/items/{item_id:int}", item)])
    return Starlette(
        routes=[
            Route("/calls", calls),
            Route("/fail", fail),
            Route("/status/{code:int}", status),
            Route("/items/{item_id}", item),
            Route("/stream", stream),
            Route("/health", item),
            Route("/healthcare", item),
            Mount("/tenants/{tenant}", app=inner),
        ]
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
    )


@pytest.fixture
def traced_app(provider: TracerProvider) -> TracingMiddleware:
    return TracingMiddleware(
        outbound_app(provider),
        tracer_provider=provider,
        exclude_paths=["/health", "/static/"],
    )


# --------------------------------------------------------------------------- W3C in/out


async def test_valid_traceparent_is_continued_with_a_new_parent_id(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls", headers={"traceparent": VALID, "tracestate": "foo=1,bar=2"})
    (sent,) = r.json()["sent"]
    assert sent["traceparent"].startswith(f"00-{TID}-")
    assert sent["traceparent"].split("-")[2] != PID
    assert sent["tracestate"] == "foo=1,bar=2"
    server = server_span(exporter)
    assert server.parent is not None
    assert server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == PID
    assert r.json()["trace_id"] == TID


async def test_each_outgoing_call_gets_its_own_client_span_id(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls?calls=3", headers={"traceparent": VALID})
    parents = {h["traceparent"].split("-")[2] for h in r.json()["sent"]}
    assert len(parents) == 3
    server = server_span(exporter)
    clients = spans(exporter, SpanKind.CLIENT)
    assert {f"{s.context.span_id:016x}" for s in clients} == parents
    assert all(s.parent is not None and s.parent.span_id == server.context.span_id for s in clients)


async def test_duplicated_traceparent_restarts_the_trace_and_drops_tracestate(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    other = f"00-{TID[:-1]}1-{PID}-01"
    async with client(traced_app) as c:
        r = await c.get(
            "/calls",
            headers=[("traceparent", other), ("traceparent", VALID), ("tracestate", "foo=1")],
        )
    (sent,) = r.json()["sent"]
    trace_id = sent["traceparent"].split("-")[1]
    assert trace_id not in {TID, TID[:-1] + "1"}
    assert "tracestate" not in sent
    assert server_span(exporter).parent is None


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{PID}-01",
        f"00-ABCDEF{TID[6:]}-{PID}-01",
        f"ff-{TID}-{PID}-01",
        VALID + "-extra",
        "00-garbage\x7f; drop table",
        "x" * 10_000,
    ],
    ids=["all-zero", "upper-case", "version-ff", "v00-extra", "garbage", "huge"],
)
async def test_invalid_traceparent_restarts_the_trace_without_an_error(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter, value: str
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls", headers={"traceparent": value, "tracestate": "foo=1"})
    assert r.status_code == 200
    (sent,) = r.json()["sent"]
    assert sent["traceparent"].split("-")[1] not in {TID, "abcdef" + TID[6:]}
    assert "tracestate" not in sent
    assert server_span(exporter).parent is None


async def test_invalid_tracestate_is_dropped_but_traceparent_kept(
    traced_app: TracingMiddleware,
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls", headers=[("traceparent", VALID), ("tracestate", "foo@=1,bar=2")])
    (sent,) = r.json()["sent"]
    assert sent["traceparent"].split("-")[1] == TID
    assert "tracestate" not in sent


async def test_long_tracestate_is_truncated_by_whole_entries(
    traced_app: TracingMiddleware,
) -> None:
    state = ",".join(f"k{i:02d}={'v' * 60}" for i in range(30))  # 30 x 64 chars
    async with client(traced_app) as c:
        r = await c.get("/calls", headers=[("traceparent", VALID), ("tracestate", state)])
    sent = r.json()["sent"][0]["tracestate"]
    assert len(sent) <= 512
    assert sent == ",".join(f"k{i:02d}={'v' * 60}" for i in range(7))


async def test_new_trace_sets_the_sampled_and_random_flags(traced_app: TracingMiddleware) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls")
    assert r.json()["sent"][0]["traceparent"].endswith("-03")


@pytest.mark.parametrize(
    ("incoming", "outgoing"),
    [("00", "00"), ("01", "01"), ("02", "02"), ("03", "03"), ("ff", "03")],
)
async def test_incoming_flags_are_kept_and_reserved_bits_cleared(
    traced_app: TracingMiddleware, incoming: str, outgoing: str
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls", headers={"traceparent": f"00-{TID}-{PID}-{incoming}"})
    assert r.json()["sent"][0]["traceparent"].endswith(f"-{outgoing}")


# The conformance suite's request cases, end to end: (headers in, trace continued?,
# tracestate expected on the outgoing call or None for "not sent").
HARNESS_CASES: list[tuple[str, list[tuple[str, str]], bool, str | None]] = [
    ("no-headers", [], False, None),
    ("traceparent-only", [("traceparent", VALID)], True, None),
    ("wrong-header-name", [("trace-parent", VALID)], False, None),
    ("tracestate-without-traceparent", [("tracestate", "foo=1,bar=2")], False, None),
    ("both", [("traceparent", VALID), ("tracestate", "foo=1,bar=2")], True, "foo=1,bar=2"),
    ("tracestate-wrong-name", [("traceparent", VALID), ("trace-state", "foo=1")], True, None),
    ("tracestate-empty", [("traceparent", VALID), ("tracestate", "")], True, None),
    ("tracestate-empty-line", [("traceparent", VALID), ("tracestate", ""), ("tracestate", "foo=1")],
     True, "foo=1"),
    ("tracestate-lines-in-order",
     [("traceparent", VALID), ("tracestate", "foo=1,bar=2"), ("tracestate", "rojo=1,congo=2"),
      ("tracestate", "baz=3")], True, "foo=1,bar=2,rojo=1,congo=2,baz=3"),
    ("tracestate-ows", [("traceparent", VALID), ("tracestate", "foo=1 \t , \t bar=2, \t baz=3")],
     True, "foo=1,bar=2,baz=3"),
    ("tracestate-duplicate-key", [("traceparent", VALID), ("tracestate", "foo=1"),
                                  ("tracestate", "foo=2")], True, None),
    ("tracestate-33-members",
     [("traceparent", VALID), ("tracestate", ",".join(f"k{i}=1" for i in range(33)))], True, None),
    ("future-version", [("traceparent", f"cc-{TID}-{PID}-01-future")], True, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "continued", "state"),
    [pytest.param(h, c, st, id=name) for name, h, c, st in HARNESS_CASES],
)
async def test_conformance_suite_cases_end_to_end(
    traced_app: TracingMiddleware,
    headers: list[tuple[str, str]],
    continued: bool,
    state: str | None,
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/calls", headers=headers)
    (sent,) = r.json()["sent"]
    version, trace_id, parent_id, _flags = sent["traceparent"].split("-")
    assert version == "00"
    assert (trace_id == TID) is continued
    assert parent_id != PID
    assert sent.get("tracestate") == state


@pytest.fixture
def live_url(traced_app: TracingMiddleware) -> Iterator[str]:
    """The traced app behind a real uvicorn server on loopback."""
    import threading
    import time

    import uvicorn

    config = uvicorn.Config(
        traced_app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def raw_get(url: str, path: str, header_lines: list[str]) -> Any:
    """GET with header lines written verbatim (httpx refuses OWS around values)."""
    import json
    import socket

    host, port = url.removeprefix("http://").split(":")
    head = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", *header_lines]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    assert b" 200 " in status_line
    return json.loads(rest.partition(b"\r\n\r\n")[2])


def test_real_server_handles_casing_ows_and_duplicated_headers(live_url: str) -> None:
    """Through uvicorn/h11, as the conformance suite sends them."""
    cased = raw_get(live_url, "/calls", [f"TrAcEpArEnT: \t {VALID} \t"])
    duplicated = raw_get(live_url, "/calls", [f"traceparent: {VALID}", f"traceparent: {VALID}"])
    state = raw_get(
        live_url,
        "/calls?calls=2",
        [f"traceparent: {VALID}", "TraceState: foo=1 ,", "tracestate: bar=2"],
    )
    assert cased["trace_id"] == TID
    assert duplicated["trace_id"] != TID
    first, second = state["sent"]
    assert first["tracestate"] == second["tracestate"] == "foo=1,bar=2"
    assert first["traceparent"] != second["traceparent"]


async def test_header_names_are_case_insensitive_in_bare_asgi(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = TracingMiddleware(bare, tracer_provider=provider)
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"TraceParent", VALID.encode())],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    span = server_span(exporter)
    assert f"{span.context.trace_id:032x}" == TID
    assert span.name == "GET"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 204
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


# --------------------------------------------------------------------------- server spans


async def test_span_is_named_by_route_template_with_semantic_attributes(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        await c.get("/items/42?q=secret", headers={"user-agent": "probe/1.0"})
    span = server_span(exporter)
    assert span.name == "GET /items/{item_id}"
    assert span.kind is SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "http.route": "/items/{item_id}",
        "url.path": "/items/42",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
        "server.address": "test",
        "client.address": "127.0.0.1",
        "client.port": 123,
        "user_agent.original": "probe/1.0",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_mounted_route_name_uses_the_mount_template_not_the_raw_value(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        await c.get("/tenants/acme/items/7")
    span = server_span(exporter)
    assert span.name == "GET /tenants/{tenant}/items/{item_id}"
    assert (span.attributes or {})["http.route"] == "/tenants/{tenant}/items/{item_id}"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/tenants/acme/nothing/here", "GET /tenants/{tenant}/{path}"),
        ("/files/a/b.txt", "GET /files/{path}"),
    ],
)
async def test_request_ending_at_a_mount_is_named_by_the_mount_template(
    provider: TracerProvider, exporter: InMemorySpanExporter, path: str, name: str
) -> None:
    async def files(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("file")(scope, receive, send)

    inner = Starlette(routes=[Route("/items/{item_id:int}", PlainTextResponse)])
    app = Starlette(routes=[Mount("/tenants/{tenant}", app=inner), Mount("/files", app=files)])
    async with client(TracingMiddleware(app, tracer_provider=provider)) as c:
        await c.get(path)
    assert server_span(exporter).name == name


async def test_unmatched_request_is_named_by_method_alone(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/no/such/path/123")
    assert r.status_code == 404
    span = server_span(exporter)
    assert span.name == "GET"
    assert "http.route" not in (span.attributes or {})


async def test_unknown_method_becomes_other(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        await c.request("BREW", "/items/1")
    span = server_span(exporter)
    assert span.name == "HTTP /items/{item_id}"
    attrs = span.attributes or {}
    assert attrs["http.request.method"] == "_OTHER"
    assert attrs["http.request.method_original"] == "BREW"


async def test_fastapi_route_template(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    api = FastAPI()

    @api.get("/genes/{symbol}")
    async def gene(symbol: str) -> dict[str, str]:
        return {"symbol": symbol, "trace": current_trace_id() or ""}

    async with client(TracingMiddleware(api, tracer_provider=provider)) as c:
        r = await c.get("/genes/lacZ")
    span = server_span(exporter)
    assert span.name == "GET /genes/{symbol}"
    assert r.json()["trace"] == f"{span.context.trace_id:032x}"


async def test_middleware_inside_starlette_stack_reads_mount_templates(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    from starlette.middleware import Middleware

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Mount("/v1", routes=[Route("/genes/{symbol}", item)])],
        middleware=[Middleware(TracingMiddleware, tracer_provider=provider)],
    )
    async with client(app) as c:
        await c.get("/v1/genes/lacZ")
    assert server_span(exporter).name == "GET /v1/genes/{symbol}"


async def test_5xx_is_an_error_and_4xx_is_not(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        await c.get("/status/503")
        await c.get("/status/404")
    by_status = {(s.attributes or {})["http.response.status_code"]: s for s in spans(exporter)}
    assert by_status[503].status.status_code is StatusCode.ERROR
    assert (by_status[503].attributes or {})["error.type"] == "503"
    assert by_status[404].status.status_code is StatusCode.UNSET
    assert "error.type" not in (by_status[404].attributes or {})


async def test_exception_is_recorded_as_event_and_reraised(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async def boom(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    mw = TracingMiddleware(boom, tracer_provider=provider)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://t") as c:
        with pytest.raises(RuntimeError, match="boom"):
            await c.get("/x")
    span = server_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "RuntimeError"
    (event,) = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "RuntimeError"


async def test_streaming_response_makes_one_span_not_one_per_send(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter
) -> None:
    async with client(traced_app) as c:
        r = await c.get("/stream")
    assert r.text.count("\n") == 20
    assert len(spans(exporter)) == 1


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/health", True),
        ("/healthcare", False),
        ("/health/deep", False),
        ("/static/app.css", True),
        ("/static", False),
    ],
)
async def test_excluded_paths_exact_and_prefix(
    traced_app: TracingMiddleware, exporter: InMemorySpanExporter, path: str, excluded: bool
) -> None:
    async with client(traced_app) as c:
        await c.get(path)
    assert (len(spans(exporter)) == 0) is excluded


def test_exclude_paths_must_be_absolute(provider: TracerProvider) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        TracingMiddleware(Starlette(), tracer_provider=provider, exclude_paths=["health"])


def test_from_env_reads_excluded_paths(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_TRACING_EXCLUDE_PATHS", "/health, /static/")
    mw = TracingMiddleware.from_env(Starlette(), prefix="APP_", tracer_provider=provider)
    assert mw._excluded("/health")
    assert mw._excluded("/static/x.js")
    assert not mw._excluded("/items")


async def test_lifespan_and_websocket_scopes_pass_through(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    mw = TracingMiddleware(app, tracer_provider=provider)

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    await mw({"type": "lifespan"}, receive, send)
    await mw({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
    assert seen == ["lifespan", "websocket"]
    assert spans(exporter) == []


async def test_context_does_not_leak_between_requests(
    traced_app: TracingMiddleware,
) -> None:
    async with client(traced_app) as c:
        first = (await c.get("/calls", headers={"traceparent": VALID})).json()
        second = (await c.get("/calls")).json()
    assert first["trace_id"] == TID
    assert second["trace_id"] not in {None, TID}
    assert current_trace_id() is None
    assert current_span_id() is None


async def test_concurrent_requests_keep_their_own_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    import anyio

    async def slow(request: Request) -> JSONResponse:
        before = current_trace_id()
        await anyio.sleep(0.01)  # let the other requests interleave
        headers = inject_headers({}, tracer_provider=provider)
        return JSONResponse({"before": before, "after": current_trace_id(), "sent": headers})

    app = TracingMiddleware(Starlette(routes=[Route("/slow", slow)]), tracer_provider=provider)
    trace_ids = [f"{i + 1:032x}" for i in range(20)]
    results: dict[str, Any] = {}

    async with client(app) as c:

        async def one(trace_id: str) -> None:
            r = await c.get("/slow", headers={"traceparent": f"00-{trace_id}-{PID}-01"})
            results[trace_id] = r.json()

        async with anyio.create_task_group() as tg:
            for trace_id in trace_ids:
                tg.start_soon(one, trace_id)

    for trace_id, body in results.items():
        assert body["before"] == body["after"] == trace_id
        assert body["sent"]["traceparent"].split("-")[1] == trace_id
    assert len(spans(exporter, SpanKind.SERVER)) == 20


# --------------------------------------------------------------------------- outbound


async def test_inject_headers_adds_correlation_id_without_overriding(
    provider: TracerProvider,
) -> None:
    token = correlation_id_var.set("req-123")
    try:
        fresh = inject_headers(tracer_provider=provider)
        kept = inject_headers({"x-request-id": "mine"}, tracer_provider=provider)
    finally:
        correlation_id_var.reset(token)
    assert fresh["X-Request-ID"] == "req-123"
    assert kept == {"x-request-id": "mine", "traceparent": kept["traceparent"]}


async def test_inject_headers_replaces_stale_trace_headers(provider: TracerProvider) -> None:
    headers = {"TraceParent": VALID, "TraceState": "old=1", "Accept": "*/*"}
    out = inject_headers(headers, tracer_provider=provider)
    assert out is headers
    assert set(out) == {"traceparent", "Accept"}
    assert TID not in out["traceparent"]


async def test_inject_headers_works_with_httpx_headers(provider: TracerProvider) -> None:
    headers = inject_headers(httpx.Headers({"accept": "*/*"}), tracer_provider=provider)
    assert headers["traceparent"].startswith("00-")


async def test_client_span_times_the_call_and_is_reused_by_inject_headers(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with client_span(
        method="get", url="http://user:pw@upstream:8080/genes?x=1", tracer_provider=provider
    ) as headers:
        again = inject_headers({}, tracer_provider=provider)
    (span,) = spans(exporter, SpanKind.CLIENT)
    assert headers["traceparent"] == again["traceparent"]
    assert headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert span.name == "GET"
    attrs = span.attributes or {}
    assert attrs["url.full"] == "http://upstream:8080/genes?x=1"
    assert attrs["server.address"] == "upstream"
    assert attrs["server.port"] == 8080


def test_client_span_records_errors_and_4xx(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(ConnectionError), client_span("call", tracer_provider=provider):
        raise ConnectionError("refused")
    with client_span("lookup", tracer_provider=provider) as headers:
        pass
    call = client_span("lookup-404", tracer_provider=provider, headers=headers)
    with call:
        call.set_response(404)
    failed, ok, missing = spans(exporter, SpanKind.CLIENT)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"
    assert ok.status.status_code is StatusCode.UNSET
    assert missing.status.status_code is StatusCode.ERROR
    assert (missing.attributes or {})["http.response.status_code"] == 404


def test_client_span_outside_with_block_has_no_span(provider: TracerProvider) -> None:
    with pytest.raises(RuntimeError, match="inside the with block"):
        _ = client_span(tracer_provider=provider).span


# --------------------------------------------------------------------------- @traced


def test_traced_sync_function_keeps_signature_and_parents_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @traced(tracer_provider=provider)
    def outer(x: int, *, y: str = "a") -> str:
        """Outer doc."""
        return inner(x) + y

    @traced("grn.inner", attributes={"grn.kind": "edge"}, tracer_provider=provider)
    def inner(x: int) -> str:
        return str(x * 2)

    assert outer(2, y="b") == "4b"
    assert list(inspect.signature(outer).parameters) == ["x", "y"]
    assert inspect.signature(outer) == inspect.signature(outer.__wrapped__)  # type: ignore[attr-defined]
    assert outer.__doc__ == "Outer doc."
    inner_span, outer_span = spans(exporter)
    assert inner_span.name == "grn.inner"
    assert outer_span.name.endswith("outer")
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer_span.context.span_id
    assert (inner_span.attributes or {})["grn.kind"] == "edge"


async def test_traced_async_function_records_exceptions(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @traced("load", tracer_provider=provider)
    async def load(fail: bool) -> str:
        assert current_trace_id() is not None
        if fail:
            raise KeyError("missing")
        return "ok"

    assert inspect.iscoroutinefunction(load)
    assert await load(False) == "ok"
    with pytest.raises(KeyError):
        await load(True)
    ok, failed = spans(exporter)
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"


def test_traced_rejects_bare_use_and_generators() -> None:
    with pytest.raises(TypeError, match="parentheses"):
        traced(lambda: None)  # type: ignore[arg-type]

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        traced()(gen)


# --------------------------------------------------------------------------- no-op / setup


async def test_api_only_noop_provider_forwards_the_incoming_context(
    exporter: InMemorySpanExporter,
) -> None:
    noop = NoOpTracerProvider()
    app = TracingMiddleware(outbound_app(noop), tracer_provider=noop)  # type: ignore[arg-type]
    async with client(app) as c:
        continued = (await c.get("/calls?calls=2", headers={"traceparent": VALID})).json()
        fresh = (await c.get("/calls")).json()
    assert [h["traceparent"] for h in continued["sent"]] == [VALID, VALID]
    assert continued["trace_id"] == TID
    assert fresh["sent"] == [{}]
    assert fresh["trace_id"] is None


def test_setup_tracing_builds_a_provider_with_the_given_exporter(
    exporter: InMemorySpanExporter,
) -> None:
    tp = setup_tracing("grn-test", exporter=exporter, batch=False, set_global=False)
    assert tp is not None

    @traced("unit", tracer_provider=tp)
    def unit() -> None:
        return None

    unit()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "grn-test"
    tp.shutdown()


def test_setup_tracing_rejects_unknown_exporter_names() -> None:
    with pytest.raises(ValueError, match="unknown exporter"):
        setup_tracing(exporter="zipkin-ish", set_global=False)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_module_does_not_import_opentelemetry() -> None:
    result = run_python(
        """
        import sys
        import gennet_toolkit.tracing as t
        assert t.current_trace_id() is None
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_the_sdk_setup_is_a_noop_and_middleware_still_works() -> None:
    result = run_python(
        """
        import asyncio, sys
        sys.modules["opentelemetry.sdk"] = None  # as if opentelemetry-sdk were absent
        from gennet_toolkit.tracing import TracingMiddleware, inject_headers, setup_tracing
        assert setup_tracing("svc") is None
        seen = {}
        async def app(scope, receive, send):
            seen.update(inject_headers({}))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        async def main():
            tp = "00-12345678901234567890123456789012-1234567890123456-01"
            scope = {"type": "http", "method": "GET", "path": "/",
                     "headers": [(b"traceparent", tp.encode())]}
            async def receive(): return {"type": "http.request"}
            async def send(m): pass
            await TracingMiddleware(app)(scope, receive, send)
            assert seen == {"traceparent": tp}, seen
        asyncio.run(main())
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_opentelemetry_fails_at_use_naming_the_extra() -> None:
    result = run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None
        sys.modules["opentelemetry.trace"] = None
        import gennet_toolkit.tracing as t
        try:
            t.TracingMiddleware(lambda s, r, x: None)
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "gennet-toolkit[otel]"' in result.stdout
    assert "gennet_toolkit.tracing" in result.stdout


def test_setup_tracing_global_provider_in_a_fresh_process() -> None:
    result = run_python(
        """
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from gennet_toolkit.tracing import current_trace_id, setup_tracing, traced
        exporter = InMemorySpanExporter()
        @traced("job")   # decorated before setup: the proxy tracer follows the provider
        def job():
            return current_trace_id()
        setup_tracing("svc", exporter=exporter, batch=False)
        trace_id = job()
        (span,) = exporter.get_finished_spans()
        assert trace_id == f"{span.context.trace_id:032x}"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_public_names() -> None:
    assert set(tracing.__all__) >= {
        "TracingMiddleware",
        "current_trace_id",
        "inject_headers",
        "setup_tracing",
        "traced",
    }
    for name in tracing.__all__:
        assert getattr(tracing, name).__doc__, name


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


def test_docs_example_runs_as_printed(tmp_path: Path) -> None:
    out = run_docs_example("tracing.md", "", tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("{'score'")]
    result = ast.literal_eval(line)
    first, second = (parse_traceparent(sent) for sent in result["sent"])
    assert first is not None
    assert second is not None
    assert f"{first.trace_id:032x}" == f"{second.trace_id:032x}" == result["trace"]
    assert first.parent_id != second.parent_id  # one client span per outgoing call
