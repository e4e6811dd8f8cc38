"""logging_middleware: per-request overhead of the correlation-id middleware.

A bare Starlette app with 30 routes answers ``GET /items/42``, driven in-process (no
HTTP client in the loop). Cases: the bare app, ours (``CorrelationIdMiddleware``) and
asgi-correlation-id's ``CorrelationIdMiddleware``, each wrapped around the app the same
way. Two suites: the request carries no id (one is generated), and the request
carries a valid id (validated and echoed). The overhead ratio is
``(ours - bare) / (peer - bare)``: below 0.5 meets the goal.

A third suite shows what ``AccessLogMiddleware`` costs when its logger is enabled
(a handler that formats the record as JSON into a null stream) and when disabled.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware as PeerCorrelationIdMiddleware

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite
from gennet_toolkit.logging_middleware import (
    AccessLogMiddleware,
    CorrelationIdFilter,
    CorrelationIdMiddleware,
    JsonFormatter,
)

VALID_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def correlation_suite(name: str, headers: list[tuple[str, str]], description: str) -> Suite:
    bare = thirty_route_app()
    scope = make_scope("/items/42", headers=headers)
    suite = Suite(name, description=description, baseline="bare Starlette", rounds=31)
    suite.add("bare Starlette", request_driver(bare, scope))
    suite.add(
        "gennet CorrelationIdMiddleware", request_driver(CorrelationIdMiddleware(bare), scope)
    )
    suite.add("asgi-correlation-id", request_driver(PeerCorrelationIdMiddleware(bare), scope))
    suite.compare("gennet CorrelationIdMiddleware", "asgi-correlation-id")
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


def main() -> None:
    """Run the suites and write benchmarks/results/logging_middleware*.{json,md}."""
    correlation_suite(
        "logging_middleware",
        [],
        "GET /items/42 on a 30-route Starlette app, no incoming id (one is generated)",
    ).run()
    correlation_suite(
        "logging_middleware-incoming-id",
        [("x-request-id", VALID_ID)],
        "GET /items/42 on a 30-route Starlette app with a valid X-Request-ID (32 hex)",
    ).run()
    access_log_suite().run()


if __name__ == "__main__":
    main()
