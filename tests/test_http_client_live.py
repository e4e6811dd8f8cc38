"""ResilientClient against a real upstream: uvicorn on a loopback port.

Connection refused, read timeouts, slow-drip bodies, Retry-After and header
propagation, as a server actually sees and sends them. Backoff sleeps are recorded,
not slept, so the file stays fast.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.error_handler import install_error_handlers
from gennet_toolkit.exceptions import UpstreamError
from gennet_toolkit.http_client import (
    ResilientClient,
    RetryPolicy,
    SyncResilientClient,
    UpstreamTimeout,
)
from gennet_toolkit.logging_middleware import CorrelationIdMiddleware
from tests.services import closed_port_url

pytestmark = pytest.mark.anyio

HITS: Counter[str] = Counter()


async def echo_headers(request: Request) -> Response:
    return JSONResponse(dict(request.headers))


async def flaky(request: Request) -> Response:
    """Fails ``fails`` times with ``status`` (and ``retry_after``), then answers 200."""
    key = request.path_params["key"]
    HITS[key] += 1
    if HITS[key] <= int(request.query_params.get("fails", "1")):
        headers = {}
        if "retry_after" in request.query_params:
            headers["Retry-After"] = request.query_params["retry_after"]
        status = int(request.query_params.get("status", "503"))
        return Response("upstream-internal-detail", status_code=status, headers=headers)
    return JSONResponse({"hits": HITS[key]})


async def slow(request: Request) -> Response:
    HITS[request.path_params["key"]] += 1
    await asyncio.sleep(float(request.query_params.get("delay", "1")))
    return JSONResponse({"late": True})


async def drip(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x"
            await asyncio.sleep(0.1)

    return StreamingResponse(body())


UPSTREAM = Starlette(
    routes=[
        Route("/headers", echo_headers),
        Route("/flaky/{key}", flaky, methods=["GET", "POST", "PUT"]),
        Route("/slow/{key}", slow, methods=["GET", "POST"]),
        Route("/drip", drip),
    ]
)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(UPSTREAM, lifespan="off", log_level="error", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


class Sleeps(list[float]):
    """Records backoff sleeps instead of sleeping."""

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)

    def sleep(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
async def client() -> AsyncIterator[Callable[..., Any]]:
    """Builds clients with recorded sleeps; closes them all afterwards."""
    made: list[Any] = []

    def make(base_url: str, *, sync: bool = False, **options: Any) -> tuple[Any, Sleeps]:
        sleeps = Sleeps()
        options.setdefault("retry", RetryPolicy(attempts=3, backoff_base=0.05, backoff_max=0.5))
        if sync:
            made.append(SyncResilientClient(base_url, sleep=sleeps.sleep, **options))
        else:
            made.append(ResilientClient(base_url, sleep=sleeps.asleep, **options))
        return made[-1], sleeps

    yield make
    for c in made:
        if isinstance(c, SyncResilientClient):
            c.close()
        else:
            await c.aclose()


def key(request: pytest.FixtureRequest) -> str:
    return request.node.name


# --------------------------------------------------------------------------- propagation


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_upstream_receives_correlation_id_and_traceparent(
    upstream_url: str, sync: bool, client: Callable[..., Any]
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    c, _ = client(upstream_url, sync=sync, tracer_provider=provider)
    token = correlation_id_var.set("corr-123")
    try:
        with provider.get_tracer("test").start_as_current_span("handler") as span:
            response = c.get("/headers") if sync else await c.get("/headers")
    finally:
        correlation_id_var.reset(token)
    seen = response.json()
    assert seen["x-request-id"] == "corr-123"
    version, trace_id, _parent, flags = seen["traceparent"].split("-")
    assert trace_id == format(span.get_span_context().trace_id, "032x")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
async def test_incoming_request_id_travels_to_the_upstream(
    upstream_url: str, framework: type[Starlette]
) -> None:
    async with ResilientClient(upstream_url, propagate_trace=False) as upstream:

        async def handler(request: Request) -> Response:
            answer = await upstream.get("/headers")
            return JSONResponse(answer.json())

        app = framework(routes=[Route("/proxy", handler)])
        wrapped = CorrelationIdMiddleware(app)
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/proxy", headers={"X-Request-ID": "incoming-9"})
    assert response.json()["x-request-id"] == "incoming-9"


@pytest.mark.parametrize("framework", [Starlette, FastAPI])
async def test_unreachable_upstream_becomes_a_502_problem_without_its_address(
    framework: type[Starlette], client: Callable[..., Any]
) -> None:
    dead = closed_port_url("http").removesuffix("/0")
    upstream, _ = client(dead)

    async def handler(request: Request) -> Response:
        await upstream.get("/genes?token=t0ps3cret")
        return Response("unreachable")

    app = framework(routes=[Route("/proxy", handler)])
    install_error_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/proxy")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "upstream_unreachable"
    port = dead.rsplit(":", 1)[1]
    assert port not in response.text
    assert "t0ps3cret" not in response.text


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_flaky_upstream_is_retried_until_it_answers(
    upstream_url: str, sync: bool, request: pytest.FixtureRequest, client: Callable[..., Any]
) -> None:
    c, sleeps = client(upstream_url, sync=sync)
    url = f"/flaky/{key(request)}?fails=2&status=502"
    response = c.get(url) if sync else await c.get(url)
    assert response.json() == {"hits": 3}
    assert len(sleeps) == 2


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_post_reaches_a_failing_upstream_once(
    upstream_url: str, sync: bool, request: pytest.FixtureRequest, client: Callable[..., Any]
) -> None:
    c, _ = client(upstream_url, sync=sync)
    url = f"/flaky/{key(request)}?fails=5"
    with pytest.raises(UpstreamError) as info:
        c.post(url, json={"g": 1}) if sync else await c.post(url, json={"g": 1})
    assert HITS[key(request)] == 1
    assert "upstream-internal-detail" not in str(info.value.to_problem())


async def test_keyed_post_is_retried_against_a_real_upstream(
    upstream_url: str, request: pytest.FixtureRequest, client: Callable[..., Any]
) -> None:
    c, _ = client(upstream_url)
    url = f"/flaky/{key(request)}?fails=1"
    response = await c.post(url, json={"g": 1}, headers={"Idempotency-Key": "abc"})
    assert response.json() == {"hits": 2}


async def test_retry_after_seconds_from_the_upstream_are_honoured(
    upstream_url: str, request: pytest.FixtureRequest, client: Callable[..., Any]
) -> None:
    c, sleeps = client(upstream_url, retry=RetryPolicy(backoff_max=5))
    response = await c.get(f"/flaky/{key(request)}?fails=1&status=429&retry_after=2")
    assert response.status_code == 200
    assert sleeps == [2.0]


async def test_retry_after_http_date_from_the_upstream_is_capped(
    upstream_url: str, request: pytest.FixtureRequest, client: Callable[..., Any]
) -> None:
    when = email.utils.formatdate(time.time() + 600, usegmt=True)
    c, sleeps = client(upstream_url, retry=RetryPolicy(backoff_max=1.5))
    response = await c.get(f"/flaky/{key(request)}", params={"fails": 1, "retry_after": when})
    assert response.status_code == 200
    assert sleeps == [1.5]


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_closed_port_is_upstream_unreachable_after_retries(
    sync: bool, client: Callable[..., Any]
) -> None:
    events: list[Any] = []
    policy = RetryPolicy(attempts=3, on_retry=events.append)
    c, sleeps = client(closed_port_url("http"), sync=sync, retry=policy)
    with pytest.raises(UpstreamError) as info:
        c.get("/x") if sync else await c.get("/x")
    err = info.value
    assert (err.status_code, err.code) == (502, "upstream_unreachable")
    assert isinstance(err.__cause__, httpx.ConnectError)
    assert err.to_problem()["attempts"] == 3
    assert len(sleeps) == 2
    assert [type(e.exception) for e in events] == [httpx.ConnectError] * 2


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_read_timeout_is_retried_for_get_but_not_for_post(
    upstream_url: str, sync: bool, request: pytest.FixtureRequest, client: Callable[..., Any]
) -> None:
    c, _ = client(upstream_url, sync=sync, timeout=0.2, retry=RetryPolicy(attempts=2))
    get_key, post_key = f"{key(request)}-get", f"{key(request)}-post"
    for method, name in (("GET", get_key), ("POST", post_key)):
        url = f"/slow/{name}?delay=1.5"
        with pytest.raises(UpstreamTimeout) as info:
            c.request(method, url) if sync else await c.request(method, url)
        assert info.value.status_code == 504
    assert (HITS[get_key], HITS[post_key]) == (2, 1)


async def test_deadline_bounds_a_slow_drip_response(
    upstream_url: str, client: Callable[..., Any]
) -> None:
    # Each chunk arrives well within the read timeout, so only the deadline can stop
    # this 4-second body (encode/httpx#1450).
    c, _ = client(upstream_url, timeout=1.0, deadline=0.5)
    with pytest.raises(UpstreamTimeout) as info:
        await c.get("/drip")
    assert isinstance(info.value.__cause__, TimeoutError)


# --------------------------------------------------------------------------- docs


def test_docs_example_prints_what_the_page_shows() -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "http_client.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    shown = re.findall(r"It prints:\n\n```\n(.*?)```", page, re.S)[0]
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == shown
    # The service example at least imports and builds its app.
    namespace: dict[str, Any] = {}
    exec(compile(blocks[1], "docs/http_client.md", "exec"), namespace)
    assert callable(namespace["app"])
