"""logging_middleware: per-request overhead of the correlation-id middleware.

A bare Starlette app with 30 routes answers ``GET /items/42``, driven in-process (no
HTTP client in the loop). Cases: the bare app, ours (``CorrelationIdMiddleware``) and
asgi-correlation-id's ``CorrelationIdMiddleware``, each wrapped around the app the same
way. Suites: the request carries no id (one is generated); the request carries a
valid id (validated and echoed); and the same with a two-message ASGI app instead of
Starlette, which isolates the middleware cost from the framework's run-to-run noise.
The overhead ratio is ``(ours - bare) / (peer - bare)``: below 0.5 meets the goal.

The last suite shows what ``AccessLogMiddleware`` costs when its logger is enabled
(a handler that formats the record as JSON into a null stream) and when disabled.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware as PeerCorrelationIdMiddleware

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite, overhead_ratio
from gennet_toolkit.logging_middleware import (
    AccessLogMiddleware,
    CorrelationIdFilter,
    CorrelationIdMiddleware,
    JsonFormatter,
)

VALID_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
# What an API client typically sends; the id header (when present) comes last, as
# proxies append it.
CLIENT_HEADERS = [
    ("host", "api.example.org"),
    ("user-agent", "python-httpx/0.28.1"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
    ("connection", "keep-alive"),
    ("authorization", "Bearer x"),
]


async def tiny_app(scope: Any, receive: Any, send: Any) -> None:
    """The smallest valid HTTP app: isolates middleware cost from framework noise."""
    await send({"type": "http.response.start", "status": 200, "headers": list(TINY_HEADERS)})
    await send({"type": "http.response.body", "body": b"ok"})


TINY_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]


def correlation_suite(
    name: str, headers: list[tuple[str, str]], description: str, *, tiny: bool = False
) -> Suite:
    bare = tiny_app if tiny else thirty_route_app()
    label = "bare ASGI app" if tiny else "bare Starlette"
    scope = make_scope("/items/42", headers=CLIENT_HEADERS + headers)
    # Many short rounds: the medians must resolve a few µs on a shared, noisy machine.
    suite = Suite(name, description=description, baseline=label, rounds=201, target=0.005)
    suite.add(label, request_driver(bare, scope))
    suite.add(OURS, request_driver(CorrelationIdMiddleware(bare), scope))
    suite.add(PEER, request_driver(PeerCorrelationIdMiddleware(bare), scope))
    suite.compare(OURS, PEER)
    return suite


def access_log_suite() -> Suite:
    bare = thirty_route_app()
    scope = make_scope("/items/42", headers=[("user-agent", "bench")], query_string=b"a=1&token=x")
    enabled = logging.getLogger("bench.access.enabled")
    enabled.propagate = False
    enabled.setLevel(logging.INFO)
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(CorrelationIdFilter(default=None))
    handler.setFormatter(JsonFormatter())
    enabled.addHandler(handler)
    disabled = logging.getLogger("bench.access.disabled")
    disabled.propagate = False
    disabled.setLevel(logging.WARNING)

    suite = Suite(
        "logging_middleware-access",
        description="GET /items/42 on a 30-route Starlette app; the access line is "
        "formatted as JSON into an in-memory stream (reset every round)",
        baseline="bare Starlette",
    )

    def reset_stream(driver: Any) -> Any:
        async def one() -> None:
            stream = handler.stream
            if stream.tell() > 1 << 20:
                stream.seek(0)
                stream.truncate()
            await driver()

        return one

    suite.add("bare Starlette", request_driver(bare, scope))
    suite.add(
        "gennet AccessLogMiddleware (JSON line)",
        reset_stream(request_driver(AccessLogMiddleware(bare, logger=enabled), scope)),
    )
    suite.add(
        "gennet AccessLogMiddleware (logger disabled)",
        request_driver(AccessLogMiddleware(bare, logger=disabled), scope),
    )
    suite.add(
        "gennet CorrelationId + AccessLog (JSON line)",
        reset_stream(
            request_driver(
                CorrelationIdMiddleware(AccessLogMiddleware(bare, logger=enabled)), scope
            )
        ),
    )
    return suite


OURS = "gennet CorrelationIdMiddleware"
PEER = "asgi-correlation-id"


def run_with_min_ratio(suite: Suite) -> None:
    """Run, then add the overhead ratio of the fastest rounds (robust to load bursts)."""
    results = suite.run(write=False)
    base = suite.baseline or ""
    ratio = overhead_ratio(results[OURS].low, results[PEER].low, results[base].low)
    note = f"overhead ratio on the fastest rounds (min): {ratio:.2f}"
    suite.note(note)
    print(f"- {note}\n")
    suite.write()


def main() -> None:
    """Run the suites and write benchmarks/results/logging_middleware*.{json,md}."""
    run_with_min_ratio(
        correlation_suite(
            "logging_middleware",
            [],
            "GET /items/42 on a 30-route Starlette app, no incoming id (one is generated)",
        )
    )
    run_with_min_ratio(
        correlation_suite(
            "logging_middleware-incoming-id",
            [("x-request-id", VALID_ID)],
            "GET /items/42 on a 30-route Starlette app with a valid X-Request-ID (32 hex)",
        )
    )
    for suffix, headers, what in (
        ("", [("x-request-id", VALID_ID)], "valid incoming id"),
        ("-generated", [], "no incoming id"),
    ):
        run_with_min_ratio(
            correlation_suite(
                "logging_middleware-isolated" + suffix,
                headers,
                f"the same middlewares around a two-message ASGI app (no framework), {what}: "
                "the middleware cost alone, without Starlette's run-to-run noise",
                tiny=True,
            )
        )
    access_log_suite().run()


if __name__ == "__main__":
    main()
