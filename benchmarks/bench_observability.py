"""Observability trio: correlation id + metrics + tracing together vs each peer alone.

Issue 3's goal: the three gennet middlewares stacked cost less per request than the
cheapest peer's metrics middleware alone. A Starlette app with 30 routes,
``GET /items/42`` with a ``traceparent``, driven in-process (no HTTP client). Tracing
on both sides records through one SDK provider with an in-memory exporter; every
metrics middleware records into a fresh registry where it allows one.
"""

from __future__ import annotations

from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware as PeerCorrelationId
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_fastapi_instrumentator import Instrumentator
from starlette_exporter import PrometheusMiddleware as ExporterMiddleware

from benchmarks._asgi import make_scope, request_driver, thirty_route_app
from benchmarks._harness import Suite
from benchmarks._sdk_floor import SdkFloorMiddleware
from gennet_toolkit.logging_middleware import CorrelationIdMiddleware
from gennet_toolkit.metrics import PrometheusMiddleware
from gennet_toolkit.tracing import TracingMiddleware

HEADERS = [
    ("host", "api.example.org"),
    ("user-agent", "bench/1.0"),
    ("accept", "application/json"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]

OURS = "gennet trio (correlation id + metrics + tracing)"
FLOOR_TRIO = "gennet correlation id + metrics + SDK floor (span calls only)"
PEERS_TRIO = "peer trio (asgi-correlation-id + starlette-exporter + otel-asgi)"


def _clearing(fn: Any, exporter: InMemorySpanExporter) -> Any:
    calls = 0

    async def one() -> None:
        nonlocal calls
        await fn()
        calls += 1
        if calls % 1000 == 0:
            exporter.clear()

    return one


def main() -> None:
    """Run both trio suites and write benchmarks/results/observability*.{json,md}."""
    _suite("observability", sample_ratio=None)
    _suite("observability-sampled-10pct", sample_ratio=0.1)


def _suite(name: str, *, sample_ratio: float | None) -> None:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    exporter = InMemorySpanExporter()
    if sample_ratio is None:
        provider = TracerProvider()
        headers = HEADERS
    else:
        # Production services sample: a new trace (no incoming traceparent) is kept
        # with this probability, by both sides alike.
        provider = TracerProvider(sampler=TraceIdRatioBased(sample_ratio))
        headers = [h for h in HEADERS if h[0] != "traceparent"]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scope = make_scope("/items/42", headers=headers)

    ours = thirty_route_app()
    ours.add_middleware(TracingMiddleware, tracer_provider=provider)
    ours.add_middleware(PrometheusMiddleware, registry=CollectorRegistry())
    ours.add_middleware(CorrelationIdMiddleware)

    # The same stack with tracing reduced to the SDK calls alone (see _sdk_floor): the
    # cheapest any all-traced trio on this provider can be.
    floor = thirty_route_app()
    floor.add_middleware(SdkFloorMiddleware, tracer_provider=provider)
    floor.add_middleware(PrometheusMiddleware, registry=CollectorRegistry())
    floor.add_middleware(CorrelationIdMiddleware)

    exporter_alone = thirty_route_app()
    exporter_alone.add_middleware(ExporterMiddleware, app_name=f"{name}_alone".replace("-", "_"))
    pfi_alone = thirty_route_app()
    Instrumentator(registry=CollectorRegistry()).instrument(pfi_alone)

    peers = thirty_route_app()
    peers.add_middleware(
        OpenTelemetryMiddleware, tracer_provider=provider, exclude_spans=["send", "receive"]
    )
    peers.add_middleware(ExporterMiddleware, app_name=f"{name}_trio".replace("-", "_"))
    peers.add_middleware(PeerCorrelationId)

    sampling = (
        "every request traced (incoming sampled traceparent)"
        if sample_ratio is None
        else f"new traces sampled at {sample_ratio:.0%}"
    )
    suite = Suite(
        name,
        description=(
            "Per-request cost of the logging + metrics + tracing trio on a 30-route "
            f"Starlette app (GET /items/42, {sampling}), against each peer metrics "
            "middleware alone and against the peer trio."
        ),
        baseline="bare starlette",
    )
    suite.add("bare starlette", request_driver(thirty_route_app(), scope))
    suite.add(OURS, _clearing(request_driver(ours, scope), exporter))
    if sample_ratio is None:  # the floor always records: only comparable when we all do
        suite.add(FLOOR_TRIO, _clearing(request_driver(floor, scope), exporter))
    suite.add("starlette-exporter alone", request_driver(exporter_alone, scope))
    suite.add("prometheus-fastapi-instrumentator alone", request_driver(pfi_alone, scope))
    suite.add(PEERS_TRIO, _clearing(request_driver(peers, scope), exporter))
    suite.compare(OURS, "starlette-exporter alone")
    suite.compare(OURS, "prometheus-fastapi-instrumentator alone")
    suite.compare(OURS, PEERS_TRIO)
    if sample_ratio is None:
        suite.compare(OURS, FLOOR_TRIO)
        suite.compare(FLOOR_TRIO, "prometheus-fastapi-instrumentator alone")
    suite.note(
        "goal: the trio's overhead ratio against the cheapest peer metrics middleware "
        "alone is below 1.0"
    )
    suite.run()


if __name__ == "__main__":
    main()
