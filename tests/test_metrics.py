"""PrometheusMiddleware, metrics_app and BusinessMetrics."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import os
import random
import shutil
import string
import subprocess
import sys
import textwrap
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

import gennet_toolkit.metrics as metrics_module
from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.metrics import (
    UNMATCHED,
    BusinessMetrics,
    PrometheusMiddleware,
    gunicorn_child_exit,
    metrics_app,
)
from gennet_toolkit.types import Message, Receive, Scope, Send
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def requests_total(registry: CollectorRegistry, **labels: str) -> float:
    return registry.get_sample_value("http_requests_total", labels) or 0.0


def route_labels(registry: CollectorRegistry) -> set[str]:
    return {
        s.labels["route"]
        for fam in registry.collect()
        if fam.name == "http_requests"
        for s in fam.samples
        if s.name == "http_requests_total"
    }


def client(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/genes/{symbol}", ok),
            Route("/echo", echo, methods=["POST"]),
            Route("/health", ok),
            Route("/healthcare", ok),
            Mount(
                "/api",
                routes=[
                    Route("/items/{item_id:int}", ok),
                    Mount("/tenants/{tenant}", routes=[Route("/networks/{nid}", ok)]),
                ],
            ),
            Mount("/static", app=PlainTextResponse("static")),
        ]
    )


def fastapi_app() -> FastAPI:
    app = FastAPI()
    v1 = APIRouter(prefix="/v1")
    genes = APIRouter(prefix="/genes")

    @genes.get("/{symbol}")
    def gene(symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    @v1.get("/networks/{nid}")
    def network(nid: int) -> dict[str, int]:
        return {"id": nid}

    v1.include_router(genes)
    app.include_router(v1)

    inner = FastAPI()

    @inner.get("/edges/{eid}")
    def edge(eid: str) -> dict[str, str]:
        return {"id": eid}

    app.mount("/tenants/{tenant}", inner)
    return app


# --------------------------------------------------------------------------- import and API


def test_public_names_are_exported() -> None:
    assert set(metrics_module.__all__) == {
        "DEFAULT_BUCKETS",
        "METHODS",
        "UNMATCHED",
        "BusinessMetrics",
        "PrometheusMiddleware",
        "clear_multiprocess_dir",
        "gunicorn_child_exit",
        "metrics_app",
    }
    for name in metrics_module.__all__:
        assert getattr(metrics_module, name).__doc__ or name.isupper()


def test_module_imports_without_the_extra_and_fails_at_use_with_the_hint() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if not installed
        import gennet_toolkit.metrics as m
        try:
            m.PrometheusMiddleware(lambda s, r, w: None)
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert (
        'gennet_toolkit.metrics needs prometheus_client: pip install "gennet-toolkit[metrics]"'
        in (out.stdout)
    )


def test_importing_the_module_imports_neither_prometheus_nor_opentelemetry() -> None:
    code = (
        "import sys, gennet_toolkit.metrics; "
        "print([m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- labels


@pytest.mark.anyio
async def test_starlette_labels_use_route_templates_with_mount_prefixes(
    registry: CollectorRegistry,
) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    async with client(app) as c:
        for path in ("/genes/lacZ", "/genes/lacY", "/api/items/7", "/static/app.css"):
            assert (await c.get(path)).status_code == 200
        assert (await c.get("/api/tenants/acme/networks/1")).status_code == 200
        assert (await c.get("/api/tenants/other/networks/2")).status_code == 200
    assert requests_total(registry, method="GET", route="/genes/{symbol}", status="200") == 2
    assert requests_total(registry, method="GET", route="/api/items/{item_id:int}", status="200")
    assert requests_total(registry, method="GET", route="/static/{path}", status="200") == 1
    route = "/api/tenants/{tenant}/networks/{nid}"
    assert requests_total(registry, method="GET", route=route, status="200") == 2


@pytest.mark.anyio
async def test_fastapi_labels_include_nested_router_prefixes_and_mounts(
    registry: CollectorRegistry,
) -> None:
    app = fastapi_app()
    app.add_middleware(PrometheusMiddleware, registry=registry)
    async with client(app) as c:
        assert (await c.get("/v1/genes/lacZ")).status_code == 200
        assert (await c.get("/v1/networks/3")).status_code == 200
        assert (await c.get("/tenants/acme/edges/e1")).status_code == 200
        assert (await c.get("/v1/networks/not-an-int")).status_code == 422
    assert requests_total(registry, method="GET", route="/v1/genes/{symbol}", status="200") == 1
    assert requests_total(registry, method="GET", route="/v1/networks/{nid}", status="200") == 1
    assert requests_total(registry, method="GET", route="/v1/networks/{nid}", status="422") == 1
    route = "/tenants/{tenant}/edges/{eid}"
    assert requests_total(registry, method="GET", route=route, status="200") == 1


@pytest.mark.anyio
async def test_root_path_is_not_part_of_the_label(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    transport = httpx.ASGITransport(app=app, root_path="/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert (await c.get("/proxy/api/items/3")).status_code == 200
        assert (await c.get("/proxy/genes/x")).status_code == 200
    assert requests_total(registry, method="GET", route="/api/items/{item_id:int}", status="200")
    assert requests_total(registry, method="GET", route="/genes/{symbol}", status="200")


@pytest.mark.anyio
async def test_unmatched_paths_and_mount_misses_share_one_label(
    registry: CollectorRegistry,
) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    async with client(app) as c:
        assert (await c.get("/wp-login.php")).status_code == 404
        assert (await c.get("/api/nothing/here")).status_code == 404
        assert (await c.get("/api/tenants/x/nothing")).status_code == 404
    assert requests_total(registry, method="GET", route=UNMATCHED, status="404") == 3
    assert route_labels(registry) == {UNMATCHED}


@pytest.mark.anyio
async def test_method_not_allowed_keeps_the_template(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    async with client(app) as c:
        assert (await c.get("/echo")).status_code == 405
    assert requests_total(registry, method="GET", route="/echo", status="405") == 1


@pytest.mark.anyio
async def test_cardinality_stays_bounded_whatever_paths_clients_send(
    registry: CollectorRegistry,
) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + "-._~%"
    methods = ["GET", "POST", "BREW", "PROPFIND", "get", "DELETE"]
    prefixes = ["", "/genes/", "/api/", "/api/items/", "/api/tenants/", "/static/", "/echo/"]
    async with client(app) as c:
        for _ in range(400):
            segment = "".join(rng.choices(alphabet, k=rng.randint(1, 30)))
            path = rng.choice(prefixes) + segment + rng.choice(["", "/", "/x/y"])
            await c.request(rng.choice(methods), path)
    assert route_labels(registry) <= {
        UNMATCHED,
        "/genes/{symbol}",
        "/api/items/{item_id:int}",
        "/api/tenants/{tenant}/networks/{nid}",
        "/static/{path}",
        "/echo",
    }
    methods_seen = {
        s.labels["method"]
        for fam in registry.collect()
        if fam.name == "http_requests"
        for s in fam.samples
    }
    assert methods_seen <= {"GET", "POST", "DELETE", "OTHER"}
    assert "OTHER" in methods_seen
    series = sum(len(fam.samples) for fam in registry.collect())
    assert series < 1000


async def _raw_call(app: Any, scope: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str = "/", method: str = "GET", **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    scope.update(extra)
    return scope


@pytest.mark.anyio
async def test_bare_asgi_status_enum_becomes_an_integer_and_odd_methods_other(
    registry: CollectorRegistry,
) -> None:
    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": HTTPStatus.CREATED, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})

    app = PrometheusMiddleware(bare, registry=registry)
    await _raw_call(app, http_scope("/anything/123", method="BREW"))
    await _raw_call(app, http_scope("/anything/456"))
    assert requests_total(registry, method="OTHER", route=UNMATCHED, status="201") == 1
    assert requests_total(registry, method="GET", route=UNMATCHED, status="201") == 1


@pytest.mark.anyio
async def test_status_codes_can_be_grouped(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry, group_status_codes=True)
    async with client(app) as c:
        await c.get("/genes/a")
        await c.get("/nope")
    assert requests_total(registry, method="GET", route="/genes/{symbol}", status="2xx") == 1
    assert requests_total(registry, method="GET", route=UNMATCHED, status="4xx") == 1


@pytest.mark.anyio
async def test_route_is_found_by_matching_when_a_layer_copies_the_scope(
    registry: CollectorRegistry,
) -> None:
    inner = starlette_app()

    async def copying(scope: Scope, receive: Receive, send: Send) -> None:
        await inner(dict(scope), receive, send)  # the route lands on the copy

    copying.app = inner  # type: ignore[attr-defined]  # how middleware chains expose .app
    app = PrometheusMiddleware(copying, registry=registry)
    async with client(app) as c:
        await c.get("/api/tenants/acme/networks/9")
        await c.get("/genes/lacZ")
        await c.get("/zzz")
    route = "/api/tenants/{tenant}/networks/{nid}"
    assert requests_total(registry, method="GET", route=route, status="200") == 1
    assert requests_total(registry, method="GET", route="/genes/{symbol}", status="200") == 1
    assert requests_total(registry, method="GET", route=UNMATCHED, status="404") == 1


# --------------------------------------------------------------------------- registry


@pytest.mark.anyio
async def test_rebuilt_stack_and_second_app_reuse_metrics_without_duplicates(
    registry: CollectorRegistry,
) -> None:
    app = starlette_app()
    app.add_middleware(PrometheusMiddleware, registry=registry)
    async with client(app) as c:
        await c.get("/genes/a")
    app.middleware_stack = app.build_middleware_stack()  # what Starlette does on changes
    other = fastapi_app()
    other.add_middleware(PrometheusMiddleware, registry=registry)
    async with client(app) as c, client(other) as c2:
        await c.get("/genes/b")
        await c2.get("/v1/networks/1")
    assert requests_total(registry, method="GET", route="/genes/{symbol}", status="200") == 2
    assert requests_total(registry, method="GET", route="/v1/networks/{nid}", status="200") == 1


def test_global_registry_is_the_default_and_registration_is_idempotent() -> None:
    from prometheus_client import REGISTRY

    first = PrometheusMiddleware(starlette_app(), prefix="gennet_test_default")
    second = PrometheusMiddleware(starlette_app(), prefix="gennet_test_default")
    assert first.registry is REGISTRY
    assert first._requests is second._requests


def test_a_clashing_foreign_metric_is_a_configuration_error(registry: CollectorRegistry) -> None:
    Counter("http_request_duration_seconds", "someone else's", registry=registry)
    with pytest.raises(ConfigurationError, match="http_request_duration_seconds"):
        PrometheusMiddleware(starlette_app(), registry=registry)


def test_a_compatible_foreign_metric_is_reused(registry: CollectorRegistry) -> None:
    mine = Counter("http_requests_total", "mine", ["method", "route", "status"], registry=registry)
    middleware = PrometheusMiddleware(starlette_app(), registry=registry)
    assert middleware._requests is mine


@pytest.mark.parametrize(
    "options",
    [
        {"exclude_paths": "/health"},
        {"exclude_paths": ["health"]},
        {"buckets": [1.0, 0.5]},
        {"buckets": []},
        {"prefix": "bad prefix"},
    ],
)
def test_bad_options_are_configuration_errors(
    registry: CollectorRegistry, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        PrometheusMiddleware(starlette_app(), registry=registry, **options)


def test_from_env_reads_prefixed_variables(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENNET_METRICS_EXCLUDE_PATHS", "/health, /ready")
    monkeypatch.setenv("GENNET_METRICS_BUCKETS", "0.1,0.5,2")
    monkeypatch.setenv("GENNET_METRICS_PREFIX", "svc")
    monkeypatch.setenv("GENNET_METRICS_GROUP_STATUS_CODES", "true")
    middleware = PrometheusMiddleware.from_env(starlette_app(), registry=registry)
    assert middleware._exact == {"/health", "/ready"}
    assert middleware._duration._upper_bounds == [0.1, 0.5, 2.0, float("inf")]
    assert registry.get_sample_value("svc_requests_in_progress", {"method": "GET"}) == 0
    monkeypatch.setenv("GENNET_METRICS_EXEMPLARS", "maybe")
    with pytest.raises(ConfigurationError, match="EXEMPLARS"):
        PrometheusMiddleware.from_env(starlette_app(), registry=registry)


# --------------------------------------------------------------------------- what is measured


@pytest.mark.anyio
async def test_in_progress_gauge_counts_the_running_request(registry: CollectorRegistry) -> None:
    seen: list[float | None] = []

    async def probe(request: Request) -> PlainTextResponse:
        seen.append(registry.get_sample_value("http_requests_in_progress", {"method": "POST"}))
        return PlainTextResponse("ok")

    app = PrometheusMiddleware(
        Starlette(routes=[Route("/p", probe, methods=["POST"])]), registry=registry
    )
    async with client(app) as c:
        await c.post("/p")
    assert seen == [1.0]
    assert registry.get_sample_value("http_requests_in_progress", {"method": "POST"}) == 0


@pytest.mark.anyio
async def test_request_and_response_body_sizes_are_observed(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    async with client(app) as c:
        r = await c.post("/echo", content=b"x" * 1234)
    assert r.content == b"x" * 1234
    labels = {"method": "POST", "route": "/echo"}
    assert registry.get_sample_value("http_request_size_bytes_sum", labels) == 1234
    assert registry.get_sample_value("http_response_size_bytes_sum", labels) == 1234
    assert registry.get_sample_value("http_response_size_bytes_count", labels) == 1


class FakeClock:
    """A timer that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.anyio
async def test_duration_excludes_background_tasks_and_ttfb_is_separate(
    registry: CollectorRegistry,
) -> None:
    clock = FakeClock()

    async def background() -> None:
        clock.advance(60.0)  # a slow background job after the response

    async def handler(request: Request) -> PlainTextResponse:
        clock.advance(0.2)
        return PlainTextResponse("ok", background=BackgroundTask(background))

    app = PrometheusMiddleware(
        Starlette(routes=[Route("/bg", handler)]), registry=registry, timer=clock
    )
    async with client(app) as c:
        await c.get("/bg")
    labels = {"method": "GET", "route": "/bg"}
    assert registry.get_sample_value("http_request_duration_seconds_sum", labels) == pytest.approx(
        0.2
    )
    assert registry.get_sample_value("http_request_ttfb_seconds_sum", labels) == pytest.approx(0.2)
    assert (
        registry.get_sample_value("http_request_duration_seconds_bucket", {**labels, "le": "0.25"})
        == 1
    )


@pytest.mark.anyio
async def test_streaming_time_is_excluded_from_duration(registry: CollectorRegistry) -> None:
    clock = FakeClock()

    async def handler(request: Request) -> StreamingResponse:
        clock.advance(0.05)

        async def events() -> Any:
            for i in range(3):
                yield f"data: {i}\n\n".encode()
                clock.advance(10.0)  # a long-lived event stream

        return StreamingResponse(events(), media_type="text/event-stream")

    app = PrometheusMiddleware(
        Starlette(routes=[Route("/sse", handler)]), registry=registry, timer=clock
    )
    async with client(app) as c:
        r = await c.get("/sse")
    assert r.text.count("data:") == 3
    labels = {"method": "GET", "route": "/sse"}
    assert registry.get_sample_value("http_request_duration_seconds_sum", labels) == pytest.approx(
        0.05
    )
    assert registry.get_sample_value("http_response_size_bytes_sum", labels) == len(r.content)


@pytest.mark.anyio
async def test_an_exception_counts_a_500_and_is_re_raised(registry: CollectorRegistry) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("kaput")

    app = PrometheusMiddleware(Starlette(routes=[Route("/boom", boom)]), registry=registry)
    async with client(app) as c:
        with pytest.raises(RuntimeError, match="kaput"):
            await c.get("/boom")
    assert requests_total(registry, method="GET", route="/boom", status="500") == 1
    assert registry.get_sample_value("http_requests_in_progress", {"method": "GET"}) == 0


@pytest.mark.anyio
async def test_inside_starlette_the_server_error_is_counted_once(
    registry: CollectorRegistry,
) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("kaput")

    app = Starlette(routes=[Route("/boom", boom)])
    app.add_middleware(PrometheusMiddleware, registry=registry)
    async with client(app, raise_app_exceptions=False) as c:
        assert (await c.get("/boom")).status_code == 500
    assert requests_total(registry, method="GET", route="/boom", status="500") == 1


@pytest.mark.anyio
async def test_a_cancelled_request_is_counted_as_client_closed(
    registry: CollectorRegistry,
) -> None:
    started = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.sleep(3600)

    app = PrometheusMiddleware(slow, registry=registry)
    task = asyncio.ensure_future(_raw_call(app, http_scope("/slow")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert requests_total(registry, method="GET", route=UNMATCHED, status="499") == 1


@pytest.mark.anyio
async def test_an_app_that_never_answers_is_counted_as_500(registry: CollectorRegistry) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    await _raw_call(PrometheusMiddleware(silent, registry=registry), http_scope("/"))
    assert requests_total(registry, method="GET", route=UNMATCHED, status="500") == 1


@pytest.mark.anyio
async def test_excluded_paths_are_anchored_at_segment_boundaries(
    registry: CollectorRegistry,
) -> None:
    app = PrometheusMiddleware(
        starlette_app(), registry=registry, exclude_paths=["/health", "/static/"]
    )
    async with client(app) as c:
        await c.get("/health")
        await c.get("/health/")
        await c.get("/static/a.css")
        await c.get("/healthcare")
    assert route_labels(registry) == {"/healthcare"}


@pytest.mark.anyio
async def test_lifespan_and_websocket_scopes_pass_through(registry: CollectorRegistry) -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    app = PrometheusMiddleware(inner, registry=registry)
    await app({"type": "lifespan"}, _never, _discard)
    await app({"type": "websocket", "path": "/ws"}, _never, _discard)
    assert seen == ["lifespan", "websocket"]
    assert route_labels(registry) == set()


async def _never() -> Message:
    raise AssertionError("not expected")


async def _discard(message: Message) -> None:
    return None


# --------------------------------------------------------------------------- exposition


async def scrape(app: Any, path: str = "/metrics", **headers: str) -> httpx.Response:
    async with client(app) as c:
        return await c.get(path, headers=headers)


@pytest.fixture
def served(registry: CollectorRegistry) -> Starlette:
    app = starlette_app()
    app.router.routes.append(Mount("/metrics", app=metrics_app(registry)))
    app.add_middleware(PrometheusMiddleware, registry=registry)
    return app


@pytest.mark.anyio
async def test_metrics_endpoint_parses_with_the_prometheus_parser(served: Starlette) -> None:
    async with client(served) as c:
        await c.get("/genes/lacZ")
        await c.post("/echo", content=b"abc")
        await c.get("/nope")
        r = await c.get("/metrics/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {
        "http_requests",
        "http_request_duration_seconds",
        "http_request_ttfb_seconds",
        "http_requests_in_progress",
        "http_request_size_bytes",
        "http_response_size_bytes",
    } <= set(families)
    totals = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["http_requests"].samples
        if s.name == "http_requests_total"
    }
    assert totals == {("/genes/{symbol}", "200"): 1, ("/echo", "200"): 1, (UNMATCHED, "404"): 1}


def _promtool() -> str | None:
    # $PROMTOOL, PATH, then where .ci/run and the monitoring tests unpack Debian's package.
    for candidate in (
        os.environ.get("PROMTOOL"),
        shutil.which("promtool"),
        "/tmp/gennet-promtool/usr/bin/promtool",
        "/tmp/prom/usr/bin/promtool",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.mark.anyio
async def test_metrics_endpoint_passes_promtool_check_metrics(served: Starlette) -> None:
    promtool = _promtool()
    if promtool is None:
        unavailable(
            "promtool not found: put it on PATH or set PROMTOOL (Debian package prometheus)"
        )
    assert promtool is not None
    async with client(served) as c:
        await c.get("/genes/lacZ")
        await c.get("/api/tenants/a/networks/1")
        await c.get("/nope")
        r = await c.get("/metrics/")
    result = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [promtool, "check", "metrics"], input=r.content, capture_output=True, check=False
        )
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.anyio
async def test_openmetrics_is_negotiated_and_carries_the_trace_id_exemplar(
    registry: CollectorRegistry,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    with tracer.start_as_current_span("request") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        await _raw_call(app, http_scope("/genes/lacZ"))
    r = await scrape(
        metrics_app(registry), "/", accept="application/openmetrics-text; version=1.0.0"
    )
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(r.text)}
    exemplars = [s.exemplar for s in families["http_requests"].samples if s.exemplar]
    assert [e.labels["trace_id"] for e in exemplars] == [trace_id]
    buckets = [s.exemplar for s in families["http_request_duration_seconds"].samples if s.exemplar]
    assert buckets
    assert all(e.labels["trace_id"] == trace_id for e in buckets)
    text = await scrape(metrics_app(registry), "/")
    assert "trace_id" not in text.text  # the classic format has no exemplars


@pytest.mark.anyio
async def test_without_an_active_span_there_is_no_exemplar(registry: CollectorRegistry) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    await _raw_call(app, http_scope("/genes/lacZ"))
    r = await scrape(metrics_app(registry), "/", accept="application/openmetrics-text")
    assert "trace_id" not in r.text
    assert r.text.endswith("# EOF\n")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=banana",
        "application/openmetrics-text; version=0.0.1",
        "text/plain; version=x.y.z",
        "\u00ff" * 3000,
        ";;;,,,=",
    ],
)
async def test_a_garbled_accept_header_still_gets_a_scrape(
    registry: CollectorRegistry, accept: str
) -> None:
    PrometheusMiddleware(starlette_app(), registry=registry)
    app = metrics_app(registry)
    scope = http_scope("/", headers=[(b"accept", accept.encode("latin-1"))])
    sent = await _raw_call(app, scope)
    assert sent[0]["status"] == 200
    assert b"http_requests_in_progress" in sent[1]["body"]


@pytest.mark.anyio
async def test_metrics_endpoint_answers_other_methods_with_405_problem(
    registry: CollectorRegistry,
) -> None:
    async with client(metrics_app(registry)) as c:
        r = await c.post("/", content=b"<script>")
        head = await c.head("/")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 405
    assert "<script>" not in r.text
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.anyio
async def test_metrics_endpoint_gzips_and_filters_by_name(registry: CollectorRegistry) -> None:
    PrometheusMiddleware(starlette_app(), registry=registry)
    app = metrics_app(registry, gzip_min_size=10)
    async with client(app) as c:
        r = await c.get("/", headers={"accept-encoding": "gzip"})
        raw = await c.get("/", headers={"accept-encoding": "gzip;q=0, br"})
        only = await c.get("/?name[]=http_requests_in_progress")
    assert r.headers["content-encoding"] == "gzip"
    assert "http_requests_in_progress" in r.text  # httpx decoded it
    assert "content-encoding" not in raw.headers
    names = {f.name for f in text_string_to_metric_families(only.text)}
    assert names == {"http_requests_in_progress"}
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


@pytest.mark.anyio
async def test_metrics_app_runs_standalone_with_lifespan(registry: CollectorRegistry) -> None:
    app = metrics_app(registry)
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --------------------------------------------------------------------------- multiprocess


WORKER = """
import asyncio, os, sys
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from gennet_toolkit.metrics import PrometheusMiddleware

async def ok(request):
    return PlainTextResponse("ok")

app = PrometheusMiddleware(Starlette(routes=[Route("/genes/{symbol}", ok)]))

async def main():
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        pass
    for i in range(int(sys.argv[1])):
        path = f"/genes/g{i}"
        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": b"", "headers": [], "scheme": "http",
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
        await app(scope, receive, send)

asyncio.run(main())
print(os.getpid())
"""

SCRAPER = """
import asyncio
from gennet_toolkit.metrics import metrics_app

async def main():
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": "/", "root_path": "",
             "query_string": b"", "headers": []}
    await metrics_app()(scope, receive, send)
    print(sent[1]["body"].decode())

asyncio.run(main())
"""


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> dict[str, str]:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _run(code: str, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_multiprocess_mode_aggregates_workers_and_drops_dead_gauges(
    multiproc_dir: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = [int(_run(WORKER, multiproc_dir, str(n)).strip()) for n in (3, 4)]
    body = _run(SCRAPER, multiproc_dir)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    totals = [s for s in families["http_requests"].samples if s.name == "http_requests_total"]
    assert [(s.labels["route"], s.value) for s in totals] == [("/genes/{symbol}", 7.0)]
    directory = Path(multiproc_dir["PROMETHEUS_MULTIPROC_DIR"])
    live = sorted(p.name for p in directory.glob("gauge_livesum_*.db"))
    assert live == sorted(f"gauge_livesum_{pid}.db" for pid in pids)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))

    class Worker:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    for pid in pids:
        gunicorn_child_exit(None, Worker(pid))
    assert not list(directory.glob("gauge_livesum_*.db"))
    assert metrics_module.clear_multiprocess_dir() >= 2
    assert not list(directory.glob("*.db"))


# --------------------------------------------------------------------------- business metrics


def test_business_metrics_are_created_once(registry: CollectorRegistry) -> None:
    grn = BusinessMetrics(registry, namespace="grn")
    edges = grn.counter("edges_imported_total", "Edges imported.", ["source"])
    again = BusinessMetrics(registry, namespace="grn").counter(
        "edges_imported_total", "Edges imported.", ["source"]
    )
    assert edges is again
    edges.labels("string-db").inc(3)
    assert registry.get_sample_value("grn_edges_imported_total", {"source": "string-db"}) == 3
    sizes = grn.histogram("network_size_nodes", "Nodes per network.", buckets=[10, 100, 1000])
    sizes.observe(42)
    assert registry.get_sample_value("grn_network_size_nodes_bucket", {"le": "100.0"}) == 1
    grn.gauge("networks_open", "Networks being edited.").set(2)
    assert registry.get_sample_value("grn_networks_open") == 2
    with pytest.raises(ConfigurationError):
        grn.histogram("edges_imported_total", "same name, other type", ["source"])
    with pytest.raises(ConfigurationError):
        grn.counter("bad name", "spaces are not allowed")
    with pytest.raises(ConfigurationError):
        BusinessMetrics(registry, namespace="9lives")


def test_business_metrics_from_env(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENNET_METRICS_NAMESPACE", "svc")
    metrics = BusinessMetrics.from_env(registry=registry)
    metrics.counter("runs_total", "Runs.").inc()
    assert registry.get_sample_value("svc_runs_total") == 1


def test_timed_sync_function_keeps_its_signature_and_counts_errors(
    registry: CollectorRegistry,
) -> None:
    metrics = BusinessMetrics(registry)

    @metrics.timed("score_seconds", labels={"model": "boolean"})
    def score(network: str, *, threshold: float = 0.5) -> float:
        """Score a network."""
        if threshold < 0:
            raise ValueError("negative")
        return threshold * 2

    assert score("n1", threshold=0.25) == 0.5
    with pytest.raises(ValueError, match="negative"):
        score("n1", threshold=-1)
    assert score.__name__ == "score"
    assert score.__doc__ == "Score a network."
    assert (
        str(inspect.signature(score)) == "(network: 'str', *, threshold: 'float' = 0.5) -> 'float'"
    )
    ok_labels = {"model": "boolean", "outcome": "ok"}
    assert registry.get_sample_value("score_seconds_count", ok_labels) == 1
    assert registry.get_sample_value("score_seconds_count", {**ok_labels, "outcome": "error"}) == 1


@pytest.mark.anyio
async def test_timed_async_function_stays_a_coroutine_function(
    registry: CollectorRegistry,
) -> None:
    metrics = BusinessMetrics(registry)

    @metrics.timed("fetch_seconds", "Time to fetch a network.")
    async def fetch(network_id: int) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"id": network_id}

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(3) == {"id": 3}
    assert registry.get_sample_value("fetch_seconds_count", {"outcome": "ok"}) == 1
    assert list(inspect.signature(fetch).parameters) == ["network_id"]


@pytest.mark.anyio
async def test_concurrent_requests_do_not_share_per_request_state(
    registry: CollectorRegistry,
) -> None:
    app = PrometheusMiddleware(starlette_app(), registry=registry)
    async with client(app) as c:
        responses = await asyncio.gather(*(c.post("/echo", content=b"x" * n) for n in range(1, 61)))
    assert [len(r.content) for r in responses] == list(range(1, 61))
    labels = {"method": "POST", "route": "/echo"}
    total = sum(range(1, 61))
    assert registry.get_sample_value("http_request_size_bytes_sum", labels) == total
    assert registry.get_sample_value("http_response_size_bytes_sum", labels) == total
    assert registry.get_sample_value("http_requests_in_progress", {"method": "POST"}) == 0


@pytest.mark.anyio
async def test_fastapi_mounted_in_starlette_composes_both_prefixes(
    registry: CollectorRegistry,
) -> None:
    outer = Starlette(routes=[Mount("/svc", app=fastapi_app())])
    app = PrometheusMiddleware(outer, registry=registry)
    async with client(app) as c:
        assert (await c.get("/svc/v1/genes/lacZ")).status_code == 200
        assert (await c.get("/svc/tenants/t1/edges/e")).status_code == 200
    assert requests_total(registry, method="GET", route="/svc/v1/genes/{symbol}", status="200")
    route = "/svc/tenants/{tenant}/edges/{eid}"
    assert requests_total(registry, method="GET", route=route, status="200") == 1


@given(accept=st.text(max_size=200), encoding=st.text(max_size=100))
@settings(max_examples=150, deadline=None)
def test_any_accept_headers_get_a_parseable_scrape(accept: str, encoding: str) -> None:
    registry = CollectorRegistry()
    BusinessMetrics(registry).counter("fuzz_total", "Fuzzed.").inc()
    headers = [
        (b"accept", accept.encode("utf-8", "replace")),
        (b"accept-encoding", encoding.encode("utf-8", "replace")),
    ]
    sent = asyncio.run(
        _raw_call(metrics_app(registry, gzip_min_size=0), http_scope("/", headers=headers))
    )
    assert sent[0]["status"] == 200
    body = sent[1]["body"]
    if (b"content-encoding", b"gzip") in sent[0]["headers"]:
        body = gzip.decompress(body)
    content_type = dict(sent[0]["headers"])[b"content-type"].decode()
    parse = (
        parse_openmetrics
        if content_type.startswith("application/openmetrics")
        else (text_string_to_metric_families)
    )
    assert "fuzz" in {f.name for f in parse(body.decode())}


@pytest.mark.anyio
async def test_exemplar_is_the_trace_of_the_toolkit_tracing_middleware_outside(
    registry: CollectorRegistry,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gennet_toolkit.tracing import TracingMiddleware

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = TracingMiddleware(
        PrometheusMiddleware(starlette_app(), registry=registry), tracer_provider=provider
    )
    async with client(app) as c:
        assert (await c.get("/genes/lacZ")).status_code == 200
    (span,) = exporter.get_finished_spans()
    r = await scrape(metrics_app(registry), "/", accept="application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(r.text)}
    (exemplar,) = [s.exemplar for s in families["http_requests"].samples if s.exemplar]
    assert exemplar.labels["trace_id"] == format(span.context.trace_id, "032x")


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
    driver = """
        from starlette.testclient import TestClient
        with TestClient(app) as c:
            assert c.get("/networks/7").json() == {"score": 0.5}
            print(c.get("/metrics/").text)
    """
    out = run_docs_example("metrics.md", driver, tmp_path)
    assert out.returncode == 0, out.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out.stdout)
        for s in family.samples
    }
    route = (("method", "GET"), ("route", "/networks/{network_id}"), ("status", "200"))
    assert samples[("http_requests_total", route)] == 1
    assert samples[("grn_edges_imported_total", (("source", "upload"),))] == 12
    assert samples[("grn_score_seconds_count", (("outcome", "ok"),))] == 1
