"""http_client: per-request overhead of ResilientClient on a successful call.

Suites (each case is one successful GET, read fully):

- ``http_client-async-asgi``: against an in-process ASGI upstream through
  ``httpx.ASGITransport``. Bare ``httpx.AsyncClient`` (baseline), ours with defaults
  (30 s deadline guard, correlation id, trace propagation), ours without trace
  propagation and deadline, ``stamina.retry`` around ``AsyncClient.get`` +
  ``raise_for_status``, and tenacity's ``AsyncRetrying`` doing the same.
- ``http_client-async-mock``: the same against ``httpx.MockTransport``, whose floor is
  much lower, so the client's own cost stands out.
- ``http_client-sync-mock``: the blocking clients on ``httpx.MockTransport``.

stamina comes from the ``bench`` extra (``pip install stamina``); without it its rows
are skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import tenacity

from benchmarks._harness import Suite
from gennet_toolkit._context import correlation_id_var
from gennet_toolkit.http_client import ResilientClient, RetryPolicy, SyncResilientClient

HAVE_STAMINA = importlib.util.find_spec("stamina") is not None
BASE = "http://upstream.bench"


async def upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app answering 200 with a small JSON body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"gene":"lacZ"}'})


def mock_handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"gene": "lacZ"})


POLICY = RetryPolicy(attempts=3, backoff_base=0.1, backoff_max=5.0)


def async_cases(
    make_transport: Callable[[], httpx.AsyncBaseTransport],
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The async cases, each on its own client and transport."""
    bare = httpx.AsyncClient(base_url=BASE, transport=make_transport())
    ours = ResilientClient(BASE, retry=POLICY, transport=make_transport())
    lean = ResilientClient(
        BASE, retry=POLICY, deadline=None, propagate_trace=False, transport=make_transport()
    )
    for_stamina = httpx.AsyncClient(base_url=BASE, transport=make_transport())
    for_tenacity = httpx.AsyncClient(base_url=BASE, transport=make_transport())

    async def bare_get() -> Any:
        return (await bare.get("/genes/lacZ")).status_code

    async def ours_get() -> Any:
        return (await ours.get("/genes/lacZ")).status_code

    async def lean_get() -> Any:
        return (await lean.get("/genes/lacZ")).status_code

    async def tenacity_get() -> Any:
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(30),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=5),
            retry=tenacity.retry_if_exception_type(httpx.HTTPError),
            reraise=True,
        ):
            with attempt:
                response = await for_tenacity.get("/genes/lacZ")
                response.raise_for_status()
        return response.status_code

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "httpx": bare_get,
        "ours": ours_get,
        "ours (no trace, no deadline)": lean_get,
        "tenacity": tenacity_get,
    }
    if HAVE_STAMINA:
        import stamina

        @stamina.retry(on=httpx.HTTPError, attempts=3, timeout=30.0)
        async def stamina_get() -> Any:
            response = await for_stamina.get("/genes/lacZ")
            response.raise_for_status()
            return response.status_code

        cases["stamina"] = stamina_get
    return cases


def run_async_suite(name: str, description: str, make: Callable[[], Any]) -> None:
    suite = Suite(name, description=description, baseline="httpx", rounds=31)
    for label, fn in async_cases(make).items():
        suite.add(label, fn)
    suite.compare("ours", "httpx")
    if HAVE_STAMINA:
        suite.compare("ours", "stamina")
    suite.compare("ours", "tenacity")
    suite.compare("ours (no trace, no deadline)", "httpx")
    if not HAVE_STAMINA:
        suite.note("stamina not installed: its row is missing (pip install stamina)")
    suite.note("ours sends X-Request-ID on every call (a correlation id is set for the run)")
    suite.run()


def sync_suite() -> None:
    bare = httpx.Client(base_url=BASE, transport=httpx.MockTransport(mock_handler))
    ours = SyncResilientClient(BASE, retry=POLICY, transport=httpx.MockTransport(mock_handler))
    suite = Suite(
        "http_client-sync-mock",
        description="one successful GET, blocking clients, httpx.MockTransport upstream",
        baseline="httpx",
        rounds=31,
    )
    suite.add("httpx", lambda: bare.get("/genes/lacZ").status_code)
    suite.add("ours", lambda: ours.get("/genes/lacZ").status_code)
    if HAVE_STAMINA:
        import stamina

        @stamina.retry(on=httpx.HTTPError, attempts=3, timeout=30.0)
        def stamina_get() -> int:
            response = bare.get("/genes/lacZ")
            response.raise_for_status()
            return response.status_code

        suite.add("stamina", stamina_get)
        suite.compare("ours", "stamina")
    suite.compare("ours", "httpx")
    suite.run()


def main() -> None:
    """Run every suite with a correlation id set, as inside a request."""
    correlation_id_var.set("bench-request-id")
    run_async_suite(
        "http_client-async-asgi",
        "one successful GET to an in-process ASGI upstream (httpx.ASGITransport)",
        lambda: httpx.ASGITransport(app=upstream),
    )
    run_async_suite(
        "http_client-async-mock",
        "one successful GET, httpx.MockTransport upstream (low floor: client cost stands out)",
        lambda: httpx.MockTransport(mock_handler),
    )
    sync_suite()


if __name__ == "__main__":
    main()
