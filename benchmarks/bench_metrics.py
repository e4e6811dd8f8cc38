"""metrics: per-request overhead of PrometheusMiddleware vs starlette-exporter and PFI.

A Starlette app with 30 routes driven in-process (no HTTP client), each middleware
added with ``app.add_middleware`` so all sit at the same depth. Two requests:
``GET /items/42`` (a templated route) and ``GET /no/such/path`` (404, where peers
that re-match routes pay the most). Peers run with their default metrics; every
middleware records into its own fresh ``CollectorRegistry`` (starlette-exporter has
no registry option and uses the global one). For the 404 case starlette-exporter is
configured to count unmatched requests (by default it drops them). A third suite
measures ours with an active OpenTelemetry span, so the trace-id exemplar is attached
on every request.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator
from starlette_exporter import PrometheusMiddleware as ExporterMiddleware

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite
from gennet_toolkit.metrics import PrometheusMiddleware

HEADERS = [("host", "api.example.org"), ("user-agent", "bench/1.0"), ("accept", "*/*")]


def _apps(**exporter_options: Any) -> dict[str, Any]:
    ours = thirty_route_app()
    ours.add_middleware(PrometheusMiddleware, registry=CollectorRegistry())
    exporter = thirty_route_app()
    exporter.add_middleware(ExporterMiddleware, app_name="bench", **exporter_options)
    pfi = thirty_route_app()
    Instrumentator(registry=CollectorRegistry()).instrument(pfi)
    return {
        "bare starlette": thirty_route_app(),
        "gennet PrometheusMiddleware": ours,
        "starlette-exporter": exporter,
        "prometheus-fastapi-instrumentator": pfi,
    }


def _suite(name: str, path: str, description: str, **exporter_options: Any) -> None:
    scope = make_scope(path, headers=HEADERS)
    suite = Suite(name, description=description, baseline="bare starlette")
    for label, app in _apps(**exporter_options).items():
        suite.add(label, request_driver(app, scope))
    suite.compare("gennet PrometheusMiddleware", "starlette-exporter")
    suite.compare("gennet PrometheusMiddleware", "prometheus-fastapi-instrumentator")
    suite.note("overhead ratio = (ours - bare) / (peer - bare); goal: at most 0.5")
    suite.run()


def _exemplar_suite() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("bench")
    scope = make_scope("/items/42", headers=HEADERS)
    apps = _apps()
    suite = Suite(
        "metrics-exemplars",
        description="GET /items/42 inside an active OpenTelemetry span (ours attaches the "
        "trace id as an exemplar; peers record none).",
        baseline="bare starlette",
    )
    for label in (
        "bare starlette",
        "gennet PrometheusMiddleware",
        "prometheus-fastapi-instrumentator",
    ):
        one = request_driver(apps[label], scope)

        async def in_span(one: Any = one) -> None:
            with tracer.start_as_current_span("request"):
                await one()

        suite.add(label, in_span)
    suite.compare("gennet PrometheusMiddleware", "prometheus-fastapi-instrumentator")
    suite.run()


def main() -> None:
    """Run the metrics suites and write benchmarks/results/metrics*.{json,md}."""
    _suite(
        "metrics",
        "/items/42",
        "Per-request cost, Starlette app with 30 routes, GET /items/42, driven in-process.",
    )
    _suite(
        "metrics-404",
        "/no/such/path",
        "Per-request cost of an unmatched path (404) on the same app; starlette-exporter "
        "set to count unmatched requests under one label as ours and PFI do "
        "(filter_unhandled_paths=False, group_unhandled_paths=True).",
        filter_unhandled_paths=False,
        group_unhandled_paths=True,
    )
    _exemplar_suite()


if __name__ == "__main__":
    main()
